"""How fast the web UI shows its first results, in real headless Chromium.

Usage: python3 bench/ui_first_results.py URL ADMIN_KEY

Signs in to a running Trailkeep at URL, opens a few searches (three times each) and prints, for
each, the time from the UI's request to rows in the table (the page's own measurement,
`#status[data-first-results-ms]`) and from navigation to rows in the table (page, modules,
session and query check included). Needs Debian's `chromium` and `chromium-driver` (installed by
./scripts/test). To reproduce the figure in the README with a million events:

    trailkeep bench ingest --events 1000000 --data-dir bench-data
    TRAILKEEP_ADMIN_KEY=tk_bench_admin_0123456789abcdef \
      trailkeep serve --data-dir bench-data --listen 127.0.0.1:7821 &
    python3 bench/ui_first_results.py http://127.0.0.1:7821 tk_bench_admin_0123456789abcdef
"""
import json, subprocess, sys, time, urllib.request, urllib.parse
if len(sys.argv) != 3:
    sys.exit(__doc__)
server, key = sys.argv[1].rstrip("/"), sys.argv[2]
drv = subprocess.Popen(["chromedriver", "--port=9555"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
W = "http://127.0.0.1:9555"
def call(method, path, body=None):
    req = urllib.request.Request(W + path, method=method, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["value"]
try:
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"]}}}}
    sid = call("POST", "/session", caps)["sessionId"]
    S = f"/session/{sid}"
    js = lambda script: call("POST", S + "/execute/sync", {"script": script, "args": []})
    def wait(script, timeout=30):
        t = time.time()
        while time.time() - t < timeout:
            v = js(script)
            if v: return v
            time.sleep(0.02)
        raise SystemExit("timeout: " + script)
    call("POST", S + "/url", {"url": server + "/"})
    wait("return document.getElementById('signin-key')")
    js(f"document.getElementById('signin-key').value = {json.dumps(key)}; document.getElementById('signin-submit').click(); return 1")
    wait("return document.getElementById('results')")
    for q, frm in [("", "now-24h"), ("", "now-7d"), ("outcome:failure", "now-7d"), ("action:codeengine.application.delete", "now-30d"), ("outcome:failure", "now-1h")]:
        for rep in range(3):
            url = server + "/ui/search?" + urllib.parse.urlencode({"q": q, "from": frm}) + f"&r={rep}"
            t0 = time.time()
            call("POST", S + "/url", {"url": url})
            ms = wait("const s = document.getElementById('status'); return s && s.textContent.startsWith('Showing') && s.dataset.firstResultsMs")
            wall = (time.time() - t0) * 1000
            rows = js("return document.querySelectorAll('#results tbody tr').length")
            total = js("return document.getElementById('hits-total')?.textContent || ''")
            print(f"q={q!r:40} from={frm:8} first results {ms} ms (request → table); page load → table {wall:.0f} ms; {rows} rows; {total}")
    call("DELETE", S)
finally:
    drv.kill()
