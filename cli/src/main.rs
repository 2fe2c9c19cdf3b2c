//! `berth`, the user and admin command line. It talks to the coordinator's
//! REST API, which is the subject of issue 3; until then it only says so.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("berth: the coordinator API is not built yet (issue 3); drive a node with `berth-agent ctl`");
    std::process::exit(2);
}
