//! Browser tests of the web UI (issue #7): real headless Chromium driven through chromedriver
//! (WebDriver, the `fantoccini` client) against a real `trailkeep serve --demo`, asserting on what
//! the page shows. Screenshots of the main pages go to `$CARGO_TARGET_DIR/ui-screenshots/`, and
//! to `docs/screenshots/` with `TRAILKEEP_UPDATE_SCREENSHOTS=1`.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`, installed by
//! `./scripts/test`. Each test starts one browser and walks through many steps: a browser start
//! costs seconds.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::server::{ADMIN_KEY, Server, get, post_json, request, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a condition may take to hold (generous: a 2-core machine running other builds).
const PATIENCE: Duration = Duration::from_secs(30);

/// One browser at a time: two would fight over two cores.
static BROWSER: Mutex<()> = Mutex::new(());

fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            std::path::Path::new(path).exists(),
            "the web UI tests need {path} (Debian package {package}); run ./scripts/test, which \
             installs chromium and chromium-driver with apt-get"
        );
    }
}

fn screenshot_dirs() -> Vec<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let mut dirs = vec![target.join("ui-screenshots")];
    if std::env::var("TRAILKEEP_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
    }
    dirs
}

/// chromedriver and a WebDriver session of headless Chromium; both end when dropped.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        require_browser();
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > PATIENCE {
                let _ = driver.kill();
                panic!("chromedriver did not listen on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         format!("--window-size={width},{height}"), "--disable-dev-shm-usage",
                         "--lang=en-US"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session starts");
        Browser { client, driver }
    }

    /// Polls `check` until it gives `Some`, or fails the test after [`PATIENCE`] saying `what`.
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let started = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if started.elapsed() > PATIENCE {
                let shot = self.client.screenshot().await.unwrap_or_default();
                let path = screenshot_dirs()[0].join("failure.png");
                let _ = std::fs::create_dir_all(path.parent().unwrap());
                let _ = std::fs::write(&path, shot);
                let body = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what} (screenshot {}); the page shows:\n{}",
                    path.display(),
                    body.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css`, once it exists and is displayed.
    async fn el(&self, css: &str) -> Element {
        let c = &self.client;
        self.until(&format!("{css} to be shown"), || async move {
            let e = c.find(Locator::Css(css)).await.ok()?;
            e.is_displayed().await.ok()?.then_some(e)
        })
        .await
    }

    async fn click(&self, css: &str) {
        self.el(css).await.click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.el(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// The text of `css` once it contains `want`.
    async fn text_contains(&self, css: &str, want: &str) -> String {
        let c = &self.client;
        self.until(&format!("{css} to show {want:?}"), || async move {
            let t = c.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            t.contains(want).then_some(t)
        })
        .await
    }

    /// The cells of the results table, row by row.
    async fn rows(&self) -> Vec<Vec<String>> {
        let v = self
            .js("return [...document.querySelectorAll('#results-body tr')].map(tr => [...tr.cells].map(c => c.textContent))")
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Waits until the results table is settled (the status says how many are shown) and has
    /// rows that all satisfy `ok`.
    async fn rows_where(&self, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<Vec<String>> {
        let (me, ok) = (self, &ok);
        self.until(what, || async move {
            let status = me
                .js("return document.getElementById('status')?.textContent || ''")
                .await;
            if !status.as_str().unwrap_or_default().starts_with("Showing") {
                return None;
            }
            let rows = me.rows().await;
            (!rows.is_empty() && rows.iter().all(|r| ok(r))).then_some(rows)
        })
        .await
    }

    async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        for dir in screenshot_dirs() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        }
    }

    async fn sign_in(&self, key: &str) {
        self.type_into("#signin-key", key).await;
        self.click("#signin-submit").await;
        self.el("#results").await;
    }
}

/// Lists visible texts whose contrast with their (nearest opaque) background is below 4.5:1.
const CONTRAST_CHECK: &str = r#"
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const bg = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const low = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!n.textContent.trim() || seen.has(el) || !el.checkVisibility?.() || el.closest('[aria-hidden=true], .visually-hidden, noscript, option')) continue;
  seen.add(el);
  const fg = rgb(getComputedStyle(el).color);
  if (fg.length === 4 && fg[3] === 0) continue;
  const [a, b] = [lum(fg.slice(0, 3)), lum(bg(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)} "${n.textContent.trim().slice(0, 30)}"`);
}
return low;
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A demo server whose data is searchable.
fn demo_server(dir: &std::path::Path) -> Server {
    let server = Server::start(&dir.join("data"), &["--demo"]);
    let (events, _) = wait_for(&server, "", 1000);
    assert_eq!(events.len(), 1000, "the demo data is searchable");
    server
}

#[test]
fn ui_search_refine_zoom_view_alert_timeline_verify_and_sign_out() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = demo_server(dir.path());
    runtime().block_on(async {
        let browser = Browser::start(1366, 900).await;
        let b = &browser;
        let c = &b.client;

        // --- sign in: a wrong key is refused, the admin key works --------------------------------
        c.goto(&format!("{}/", server.url)).await.unwrap();
        b.el("#signin-key").await;
        b.shot("signin").await;
        b.type_into("#signin-key", "tk_wrong_key_000000000000000").await;
        b.click("#signin-submit").await;
        b.text_contains("#signin-error", "not valid").await;
        b.sign_in(ADMIN_KEY).await;
        b.text_contains("#who", "admin").await;
        // The session cookie is HttpOnly: scripts cannot read it.
        let cookies = b.js("return document.cookie").await;
        assert!(!cookies.as_str().unwrap().contains("trailkeep_session"), "{cookies}");

        // --- search: the newest events of the last 24 hours, in a table -----------------------
        let rows = b.rows_where("the first results", |_| true).await;
        let ms = b
            .js("return document.getElementById('status').dataset.firstResultsMs")
            .await;
        println!("first results of the last 24 hours (5,000 demo events): {ms} ms from the request to the table");
        assert_eq!(rows[0].len(), 7, "time, action, outcome, severity, initiator, target, message");
        b.text_contains("#hits-total", "events").await;
        // Scrolling down the table fetches the next pages by cursor; no event comes twice.
        b.js("document.getElementById('table-wrap').scrollTop = 1e9; return null").await;
        let first = rows.len();
        let ids: Vec<String> = b
            .until("a second page after scrolling", || async move {
                let v = b
                    .js("return [...document.querySelectorAll('#results-body tr')].map(tr => tr.dataset.account + '/' + tr.dataset.id)")
                    .await;
                let ids: Vec<String> = serde_json::from_value(v).ok()?;
                (ids.len() > first).then_some(ids)
            })
            .await;
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "pages do not overlap");

        // A broken query is marked where it is wrong, and not run.
        b.type_into("#q", "outcome:failure AND (").await;
        b.text_contains("#q-errors", "not closed").await;
        b.el("#q-marked mark").await;
        assert_eq!(
            b.el("#q").await.attr("aria-invalid").await.unwrap().as_deref(),
            Some("true")
        );

        // Failures of the last 7 days.
        b.type_into("#q", "outcome:failure").await;
        b.el("#range").await.select_by_value("7d").await.unwrap();
        let rows = b
            .rows_where("only failures", |r| r[2] == "failure")
            .await;
        assert!(rows.len() >= 20, "{} failures", rows.len());
        assert!(b.url().await.contains("q=outcome%3Afailure"), "the URL holds the query");
        assert!(b.url().await.contains("from=now-7d"), "{}", b.url().await);
        b.shot("search").await;

        // --- open an event; refine by clicking values -------------------------------------------
        b.click("#results-body tr:nth-child(1)").await;
        b.el("#detail-json").await;
        let action = rows[0][1].clone();
        b.click(&format!("button.refine.add[data-term='action:\"{action}\"']")).await;
        let q = b.el("#q").await.prop("value").await.unwrap().unwrap();
        assert_eq!(q, format!("outcome:failure AND action:\"{action}\""));
        let refined = b
            .rows_where("only that action's failures", |r| r[1] == action && r[2] == "failure")
            .await;
        // Exclude the first row's initiator.
        b.click("#results-body tr:nth-child(1)").await;
        b.el("#detail-json").await;
        let initiator: String = b
            .js("return document.querySelector('#detail-json button.refine.exclude[data-term^=\"initiator.name:\"]')?.dataset.term || ''")
            .await
            .as_str()
            .unwrap()
            .to_string();
        assert!(!initiator.is_empty(), "the event has an initiator name");
        b.click(&format!("button.refine.exclude[data-term='{}']", initiator.replace('\'', "\\'"))).await;
        let name = initiator
            .trim_start_matches("initiator.name:\"")
            .trim_end_matches('"')
            .to_string();
        let initiator_ref = &initiator;
        b.until("the query to exclude the initiator", || async move {
            let q = b.el("#q").await.prop("value").await.ok()??;
            q.ends_with(&format!("-{initiator_ref}")).then_some(())
        })
        .await;
        // The table settles without that initiator (or says nothing matches).
        let name = &name;
        b.until("the excluded initiator to be gone", || async move {
            let status = b.js("return document.getElementById('status').textContent").await;
            let s = status.as_str().unwrap_or_default().to_string();
            if s.starts_with("No events match") {
                return Some(());
            }
            let rows = b.rows().await;
            (s.starts_with("Showing") && !rows.is_empty() && rows.iter().all(|r| &r[4] != name))
                .then_some(())
        })
        .await;
        assert!(!refined.is_empty());

        // --- histogram: drag across the middle to zoom in --------------------------------------
        b.type_into("#q", "outcome:failure").await;
        b.click("#search-submit").await;
        b.rows_where("failures again", |r| r[2] == "failure").await;
        let total = |t: String| -> u64 {
            t.split_whitespace().next().unwrap().replace(',', "").parse().unwrap()
        };
        let before = total(b.text_contains("#hits-total", "events").await);
        let svg = b.el("#histogram-svg").await;
        let (_, _, width, _) = svg.rectangle().await.unwrap();
        let drag = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement {
                element: svg.clone(),
                duration: None,
                x: -width / 6.0,
                y: 0.0,
            })
            .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
            .then(PointerAction::MoveBy {
                duration: Some(Duration::from_millis(300)),
                x: width / 3.0,
                y: 0.0,
            })
            .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
        c.perform_actions(drag).await.unwrap();
        b.until("the zoomed range in the URL", || async move {
            let u = b.url().await;
            (u.contains("to=") && !u.contains("from=now")).then_some(())
        })
        .await;
        assert_eq!(
            b.el("#range").await.prop("value").await.unwrap().as_deref(),
            Some("custom")
        );
        let after = b
            .until("a smaller total after zooming", || async move {
                let t = b.el("#hits-total").await.text().await.ok()?;
                let n = total(t);
                (n < before).then_some(n)
            })
            .await;
        assert!(after > 0, "a third of a week has failures: {after} of {before}");
        let rows = b.rows_where("zoomed results", |r| r[2] == "failure").await;
        // Zoom out and back in: the total grows again.
        let zoomed_url = b.url().await;
        b.click("#zoom-out").await;
        b.until("a larger total after zooming out", || async move {
            let t = b.el("#hits-total").await.text().await.ok()?;
            (total(t) > after).then_some(())
        })
        .await;
        c.goto(&zoomed_url).await.unwrap();
        // Every row is inside the zoomed range.
        let u = c.current_url().await.unwrap();
        let param = |k: &str| u.query_pairs().find(|(n, _)| n == k).unwrap().1.to_string();
        let (from, to) = (param("from"), param("to"));
        for r in &rows {
            let t = format!("{}Z", r[0].replace(' ', "T"));
            assert!(t.as_str() >= &from[..23] && t.as_str() <= to.as_str(), "{t} in {from}..{to}");
        }

        // --- a shared URL opens the same search ---------------------------------------------------
        let shared = b.url().await;
        c.goto(&shared).await.unwrap();
        let again = b.rows_where("the shared search", |r| r[2] == "failure").await;
        assert_eq!(again.len(), rows.len());
        b.click("#results-body tr:nth-child(1)").await;
        b.el("#detail-json").await;
        b.shot("event-detail").await;
        let low = b.js(CONTRAST_CHECK).await;
        assert_eq!(low, json!([]), "text below 4.5:1 contrast on the search page");

        // --- save the search as a view; an alert on it -----------------------------------------
        b.type_into("#q", "outcome:failure AND severity:critical").await;
        b.el("#range").await.select_by_value("24h").await.unwrap();
        b.rows_where("critical failures", |r| r[2] == "failure").await;
        b.click("#save-view").await;
        b.type_into("#view-name", "Critical failures (UI test)").await;
        b.el("#view-account").await.select_by_value("a1b2c3d4e5f60718293a4b5c6d7e8f90").await.unwrap();
        b.click("#view-save").await;
        b.text_contains("#toast", "Saved view").await;
        let views = get(&server, "/v1/views").json();
        let view = views["views"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "Critical failures (UI test)")
            .expect("the view was saved")
            .clone();
        assert_eq!(view["query"], "outcome:failure AND severity:critical");
        assert_eq!(view["window"], "24h");

        b.click("nav a[data-page=views]").await;
        b.text_contains("#views-table", "Critical failures (UI test)").await;
        b.click(&format!("#views-table tr[data-id='{}'] button[data-view]", view["id"].as_str().unwrap())).await;
        b.type_into("#alert-name", "Critical failures page").await;
        b.type_into("#alert-threshold", "2").await;
        b.el("#alert-window").await.select_by_value("15m").await.unwrap();
        b.el("#channel-type").await.select_by_value("webhook").await.unwrap();
        b.type_into("#channel-url", "http://127.0.0.1:9/hook").await;
        b.type_into("#channel-secret", "ui-test-webhook-secret-0001").await;
        b.click("#alert-save").await;
        b.text_contains("#alert-title", "Critical failures page").await;
        b.text_contains("main", "at least 2 matching events in 15m").await;
        b.el("#history-title").await;
        // Edit it: a higher threshold, the channel kept.
        b.type_into("#alert-threshold", "5").await;
        b.click("#alert-save").await;
        b.text_contains("main", "at least 5 matching events in 15m").await;
        let rules = get(&server, "/v1/alerts").json();
        let rule = rules["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "Critical failures page")
            .expect("the alert was created")
            .clone();
        assert_eq!(rule["condition"]["threshold"], 5);
        assert_eq!(rule["channels"][0]["type"], "webhook");
        assert_eq!(rule["channels"][0]["url"], "http://127.0.0.1:9/hook");
        // It fires: with a threshold of 1 and no window every matching event notifies; the
        // webhook address refuses connections, so the history shows the firing and the retries.
        b.type_into("#alert-threshold", "1").await;
        b.el("#alert-window").await.select_by_value("").await.unwrap();
        b.click("#alert-save").await;
        b.text_contains("main", "every matching event").await;
        assert_eq!(
            b.el("#alert-window").await.prop("value").await.unwrap().as_deref(),
            Some(""),
            "the edit form shows the rule as it is"
        );
        let critical = json!({
            "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
            "action": "kms.secrets.unwrap",
            "outcome": "failure",
            "severity": "critical",
            "message": "alert probe from the UI test",
            "initiator": {"id": "IBMid-UITEST", "name": "ui-test@example.com", "typeURI": "service/security/account/user"},
            "target": {"id": "crn:v1:bluemix:public:kms:us-south:a/a1b2c3d4e5f60718293a4b5c6d7e8f90:kms-1:key:k1", "name": "k1", "typeURI": "kms/secret"},
            "reason": {"reasonCode": 403, "reasonType": "Forbidden"},
            "logSourceCRN": "crn:v1:bluemix:public:kms:us-south:a/a1b2c3d4e5f60718293a4b5c6d7e8f90:kms-1::",
        });
        let r = post_json(&server, "/v1/events", &critical);
        assert_eq!(r.status, 200, "{}", r.text());
        let alert_page = b.url().await;
        b.until("the firing in the alert's history", || {
            let alert_page = alert_page.clone();
            async move {
                c.goto(&alert_page).await.ok()?;
                let t = b.el("#history-title").await;
                let _ = t;
                let hist = c.find(Locator::Css("#alert-history")).await.ok()?.text().await.ok()?;
                hist.contains("fired").then_some(())
            }
        })
        .await;
        // A test notification goes to the channel now and says how it went (nothing listens on
        // port 9: the attempt fails, and says why).
        b.click("#alert-test").await;
        b.text_contains("#test-result", "webhook #0: failed").await;
        b.shot("alert").await;
        b.click("nav a[data-page=views]").await;
        b.text_contains("#alerts-table", "Critical failures page").await;
        b.shot("views").await;
        // Opening the view searches with its query, account and window.
        b.click(&format!("#views-table tr[data-id='{}'] a", view["id"].as_str().unwrap()))
            .await;
        b.rows_where("the view's events", |r| r[2] == "failure" && r[3] == "critical")
            .await;
        assert_eq!(
            b.el("#q").await.prop("value").await.unwrap().as_deref(),
            Some("outcome:failure AND severity:critical")
        );
        assert_eq!(
            b.el("#account").await.prop("value").await.unwrap().as_deref(),
            Some("a1b2c3d4e5f60718293a4b5c6d7e8f90")
        );

        // --- an object's timeline from an event ------------------------------------------------
        c.goto(&format!(
            "{}/ui/search?q={}&from=now-7d",
            server.url,
            crate::server::enc("action:codeengine.application.update")
        ))
        .await
        .unwrap();
        b.rows_where("application updates", |r| r[1] == "codeengine.application.update").await;
        b.click("#results-body tr:nth-child(1)").await;
        let target: String = b
            .js("return document.querySelector('#detail-json button.refine.add[data-term^=\"target.id:\"]').dataset.term")
            .await
            .as_str()
            .unwrap()
            .trim_start_matches("target.id:\"")
            .trim_end_matches('"')
            .to_string();
        // The event's project is offered as a scope.
        b.text_contains("#detail-scopes", "Part of").await;
        b.click("#open-timeline").await;
        b.el("#timeline li").await;
        b.text_contains("main", &target).await;
        let times: Vec<String> = serde_json::from_value(
            b.js("return [...document.querySelectorAll('#timeline > li .tl-head span:first-child')].map(s => s.textContent)").await,
        )
        .unwrap();
        assert!(!times.is_empty());
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "oldest to newest");
        let api = get(
            &server,
            &format!("/v1/objects/{}/timeline", crate::server::enc(&target)),
        )
        .json();
        assert_eq!(api["events"].as_array().unwrap().len(), times.len());
        b.shot("timeline").await;

        // --- verify an event in the browser ---------------------------------------------------
        c.back().await.unwrap();
        b.rows_where("the search again", |r| r[1] == "codeengine.application.update").await;
        b.click("#results-body tr:nth-child(2)").await;
        b.click("#verify-event").await;
        b.text_contains("#verify-verdict", "Verified").await;
        let steps = b.el("#verify-result ol.steps").await.text().await.unwrap();
        assert!(steps.contains("Ed25519 signature"), "{steps}");
        assert!(steps.contains("leads through"), "{steps}");
        // The latest checkpoint of each demo account, its signature checked in the browser.
        let cps = b.text_contains("#checkpoints", "a1b2c3d4e5f60718293a4b5c6d7e8f90").await;
        assert!(cps.contains("✓ valid") && !cps.contains("INVALID"), "{cps}");
        b.text_contains("#verifier-key", "+").await;
        b.shot("integrity").await;
        let low = b.js(CONTRAST_CHECK).await;
        assert_eq!(low, json!([]), "text below 4.5:1 contrast on the integrity page");
        // A changed event does not verify: the same code, given a tampered copy.
        let tampered = c
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                   const v = await import('/ui/assets/verify.js');
                   const id = new URLSearchParams(location.search).get('event');
                   const r = await fetch(`/v1/events/${encodeURIComponent(id)}?proof=true`);
                   const item = await r.json();
                   const key = await (await fetch('/v1/log/key')).text();
                   const good = await v.verifyItem(item, key);
                   item.event.outcome = item.event.outcome === 'success' ? 'failure' : 'success';
                   const bad = await v.verifyItem(item, key);
                   const note = item.proof.checkpoint.replace(/\n(\d+)\n/, (m, n) => `\n${Number(n) + 1}\n`);
                   const forged = await v.verifyNote(note, await v.parseVerifierKey(key));
                   // A browser without Ed25519 in WebCrypto: only the hash path is checked, and
                   // the page says so.
                   const real = crypto.subtle.importKey.bind(crypto.subtle);
                   crypto.subtle.importKey = (f, k, alg, ...rest) =>
                     alg?.name === 'Ed25519' ? Promise.reject(new DOMException('no', 'NotSupportedError')) : real(f, k, alg, ...rest);
                   delete item.proof; // refetch the untampered event
                   const again = await (await fetch(`/v1/events/${encodeURIComponent(id)}?proof=true`)).json();
                   const partial = await v.verifyItem(again, key);
                   crypto.subtle.importKey = real;
                   done([good.verdict, bad.verdict, forged, partial.verdict,
                         partial.steps.some(s => s.ok === null && s.text.includes('only the hash path was checked'))]);"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            tampered,
            json!(["verified", "failed", "invalid", "hash-only", true])
        );

        // Nothing the UI needed was blocked by its Content-Security-Policy.
        let csp = b.js("return document.documentElement.dataset.cspViolations || '0'").await;
        assert_eq!(csp, "0", "CSP violations");

        // --- sign out -------------------------------------------------------------------------
        b.click("#signout").await;
        b.text_contains("main", "You are signed out").await;
        c.goto(&format!("{}/ui/search", server.url)).await.unwrap();
        b.el("#signin-key").await;
        let r = request("GET", &format!("{}/ui/session", server.url), None, &[], None);
        assert_eq!(r.json()["signedIn"], false);
        c.clone().close().await.unwrap();
    });
}

#[test]
fn ui_reader_narrow_window_keyboard_live_tail_and_revocation() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = demo_server(dir.path());
    let account = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
    let created = post_json(
        &server,
        "/v1/keys",
        &json!({"name": "ui reader", "role": "reader", "accounts": [account]}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let reader = created.json();
    let secret = reader["secret"].as_str().unwrap().to_string();
    let key_id = reader["id"].as_str().unwrap().to_string();
    runtime().block_on(async {
        let browser = Browser::start(560, 900).await;
        let b = &browser;
        let c = &b.client;
        c.goto(&format!("{}/ui/search?q=outcome%3Afailure&from=now-7d", server.url))
            .await
            .unwrap();
        // Sign in with the keyboard only: type the key, press Enter.
        b.el("#signin-key").await.send_keys(&format!("{secret}\n")).await.unwrap();
        b.el("#results").await;
        b.text_contains("#who", "reader").await;
        // The reader sees its one account and nothing of the others.
        let options: Vec<String> = serde_json::from_value(
            b.js("return [...document.querySelectorAll('#account option')].map(o => o.value)").await,
        )
        .unwrap();
        assert_eq!(options, vec!["".to_string(), account.to_string()]);
        assert!(b.js("return document.getElementById('save-view')").await.is_null(), "a reader cannot save views");
        b.rows_where("the reader's failures", |r| r[2] == "failure").await;
        let accounts: Vec<String> = serde_json::from_value(
            b.js("return [...document.querySelectorAll('#results-body tr')].map(tr => tr.dataset.account)").await,
        )
        .unwrap();
        assert!(accounts.iter().all(|a| a == account), "{accounts:?}");
        // Narrow window: the table keeps its first columns and nothing scrolls sideways.
        let overflow = b
            .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert!(overflow.as_i64().unwrap() <= 0, "no horizontal scroll: {overflow}");
        let hidden = b
            .js("return getComputedStyle(document.querySelector('#results th:nth-child(7)')).display")
            .await;
        assert_eq!(hidden, "none", "the message column folds away on a narrow window");
        b.shot("search-narrow").await;

        // Keyboard: rows are focusable, arrows move, Enter opens the detail, Close returns.
        let first = b.el("#results-body tr:nth-child(1)").await;
        b.js("document.querySelector('#results-body tr').focus()").await;
        first.send_keys("\u{E015}").await.unwrap(); // ArrowDown
        let focused = b
            .js("return [...document.querySelectorAll('#results-body tr')].indexOf(document.activeElement)")
            .await;
        assert_eq!(focused, 1);
        b.js("return null").await;
        let second = b.el("#results-body tr:nth-child(2)").await;
        second.send_keys("\u{E007}").await.unwrap(); // Enter
        b.el("#detail-json").await;
        let active = b.js("return document.activeElement.id").await;
        assert_eq!(active, "detail-title", "focus moves to the opened event");
        b.click("#detail-close").await;
        // The histogram zooms with the keyboard too: → moves a selection, Enter zooms into it.
        let chart = b.el("#histogram").await;
        chart.send_keys("\u{E014}\u{E014}\u{E007}").await.unwrap(); // ArrowRight ×2, Enter
        b.until("a keyboard zoom in the URL", || async move {
            b.url().await.contains("to=").then_some(())
        })
        .await;
        b.el("#range").await.select_by_value("7d").await.unwrap();
        b.until("the 7-day range again", || async move {
            b.url().await.contains("from=now-7d").then_some(())
        })
        .await;
        // Text contrast: every visible text on the page is at least 4.5:1 against its background
        // (WCAG AA), computed from the styles the browser applied.
        // (The check finds a pale grey text when there is one.)
        b.js("const p = document.createElement('p'); p.id = 'pale'; p.textContent = 'pale'; p.style.color = '#aaaaaa'; document.getElementById('main').append(p); return null").await;
        let low = b.js(CONTRAST_CHECK).await;
        assert_eq!(low.as_array().map(Vec::len), Some(1), "{low}");
        b.js("document.getElementById('pale').remove(); return null").await;
        let low = b.js(CONTRAST_CHECK).await;
        assert_eq!(low, json!([]), "text below 4.5:1 contrast");
        // Every form control has a label.
        let unlabeled = b
            .js("return [...document.querySelectorAll('input, select')].filter(e => e.type !== 'hidden' && !e.labels?.length && !e.getAttribute('aria-label')).map(e => e.id)")
            .await;
        assert_eq!(unlabeled, json!([]), "controls without a label");

        // Live tail: a new matching event appears at the top without searching again.
        b.el("#live").await.click().await.unwrap();
        b.text_contains("#status", "Live").await;
        assert!(b.url().await.contains("live=1"));
        let marker = "codeengine.application.create";
        let event = json!({
            "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
            "action": marker,
            "outcome": "failure",
            "message": "live tail probe from the UI test",
            "initiator": {"id": "IBMid-UITEST", "name": "ui-test@example.com", "typeURI": "service/security/account/user"},
            "target": {"id": format!("crn:v1:bluemix:public:codeengine:eu-de:a/{account}:proj-ui:application:web"), "name": "web", "typeURI": "codeengine/application"},
            "reason": {"reasonCode": 409, "reasonType": "Conflict"},
            "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:eu-de:a/{account}:proj-ui::"),
        });
        let r = post_json(&server, "/v1/events", &event);
        assert_eq!(r.status, 200, "{}", r.text());
        b.until("the tailed event at the top", || async move {
            let rows = b.rows().await;
            rows.first().filter(|r| r[6].contains("live tail probe")).map(|_| ())
        })
        .await;
        b.text_contains("#status", "1 new event").await;

        // A newcomer's question: the failures of the last hour in one project. Another project
        // failed too in that hour.
        b.el("#live").await.click().await.unwrap();
        let mut other = event.clone();
        other["message"] = json!("other project probe");
        other["target"]["id"] = json!(format!(
            "crn:v1:bluemix:public:codeengine:eu-de:a/{account}:proj-other:application:api"
        ));
        other["logSourceCRN"] = json!(format!(
            "crn:v1:bluemix:public:codeengine:eu-de:a/{account}:proj-other::"
        ));
        let r = post_json(&server, "/v1/events", &other);
        assert_eq!(r.status, 200, "{}", r.text());
        let (found, _) = wait_for(&server, "\"other project probe\"", 1);
        assert_eq!(found.len(), 1, "the second probe is searchable");
        b.el("#range").await.select_by_value("1h").await.unwrap();
        let rows = b
            .until("both probes among the last hour's failures", || async move {
                let status = b.js("return document.getElementById('status').textContent").await;
                let rows = b.rows().await;
                let has = |m: &str| rows.iter().any(|r| r[6].contains(m));
                (status.as_str()?.starts_with("Showing") && has("live tail probe") && has("other project probe"))
                    .then_some(rows)
            })
            .await;
        assert!(rows.iter().all(|r| r[2] == "failure"));
        let at = rows.iter().position(|r| r[6].contains("live tail probe")).unwrap();
        b.click(&format!("#results-body tr:nth-child({})", at + 1)).await;
        let project = format!("scope:\"crn:v1:bluemix:public:codeengine:eu-de:a/{account}:proj-ui::\"");
        b.click(&format!("#detail-scopes button.refine.add[data-term='{project}']")).await;
        let rows = b
            .rows_where("only the project's failures", |r| {
                r[2] == "failure" && !r[6].contains("other project probe")
            })
            .await;
        assert!(rows.iter().any(|r| r[6].contains("live tail probe")), "{rows:?}");
        assert!(b.url().await.contains("from=now-1h"));
        assert_eq!(
            b.el("#q").await.prop("value").await.unwrap().unwrap(),
            format!("outcome:failure AND {project}")
        );

        let csp = b.js("return document.documentElement.dataset.cspViolations || '0'").await;
        assert_eq!(csp, "0", "CSP violations");
        // The policy is real: an injected inline script does not run, and is counted.
        b.js("const s = document.createElement('script'); s.textContent = 'window.injected = 1'; document.body.append(s); return null").await;
        b.until("the inline script to be refused", || async move {
            let n = b.js("return document.documentElement.dataset.cspViolations || '0'").await;
            (n == "1").then_some(())
        })
        .await;
        assert!(b.js("return window.injected").await.is_null(), "the inline script ran");

        // Revoking the key ends the session at the next request.
        let r = request(
            "DELETE",
            &format!("{}/v1/keys/{key_id}", server.url),
            Some(ADMIN_KEY),
            &[],
            None,
        );
        assert!(r.status < 300, "{} {}", r.status, r.text());
        b.click("#search-submit").await;
        b.text_contains("main", "session has ended").await;
        // A writer key may sign in but has nothing to read: the UI says so instead of failing.
        let writer = post_json(
            &server,
            "/v1/keys",
            &json!({"name": "ui writer", "role": "writer", "accounts": [account]}),
        );
        assert_eq!(writer.status, 201, "{}", writer.text());
        let writer_secret = writer.json()["secret"].as_str().unwrap().to_string();
        b.type_into("#signin-key", &writer_secret).await;
        b.click("#signin-submit").await;
        b.text_contains("#cannot-read", "may send events but not read them").await;
        b.click("#signout").await;
        b.el("#signin-key").await;
        c.clone().close().await.unwrap();
    });
}
