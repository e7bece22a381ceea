//! Integration tests of `trailkeep-client` against a real Trailkeep server (the server library
//! started in-process on a loopback port, exactly as `trailkeep serve` runs it).

#[path = "../../examples/projects_service/app.rs"]
#[allow(dead_code)]
mod app;

mod client;
mod layer;
mod outage;
mod support;
