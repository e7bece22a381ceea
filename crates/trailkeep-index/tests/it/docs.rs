//! Every example query in `docs/query.md` is valid, so the documentation cannot rot.

use trailkeep_index::query::plan_strict;

#[test]
fn every_example_in_the_query_documentation_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/query.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut in_block = false;
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = line == "```text";
            continue;
        }
        if !in_block
            || line.trim().is_empty()
            || line.starts_with('#')
            || line.starts_with("GET ")
            || line.starts_with("trailkeep ")
        {
            continue;
        }
        // `query    explanation`: the query ends at the first run of two or more spaces.
        let query = line.split("  ").next().unwrap_or("").trim_end();
        checked += 1;
        if let Err(e) = plan_strict(query) {
            failures.push(format!("{query}: {e}"));
        }
    }
    assert!(checked > 50, "only {checked} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
