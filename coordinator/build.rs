//! Bundles the portal's front-end (xterm.js and its fit addon, Monaco, from
//! the npm registry) into the binary: `scripts/web-assets.sh` fetches the
//! pinned, integrity-checked packages (cached under /var/cache/berth/npm)
//! and the files land in OUT_DIR/web for `include_bytes!`; Monaco's tree is
//! listed in OUT_DIR/web/monaco.rs (path, bytes) for the asset route.

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("web");
    let script = std::path::Path::new("../scripts/web-assets.sh");
    println!("cargo:rerun-if-changed={}", script.display());
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .status()
        .expect("run scripts/web-assets.sh");
    if !status.success() {
        panic!(
            "scripts/web-assets.sh could not fetch the web terminal's assets from the npm registry \
             (see above); set NPM_REGISTRY to a mirror or fill /var/cache/berth/npm"
        );
    }
    let monaco = out.join("monaco");
    let mut files = Vec::new();
    walk(&monaco, &monaco, &mut files);
    files.sort();
    let mut list = String::from("/// Monaco's files: (path under min/vs, bytes).\npub static MONACO: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in files {
        list.push_str(&format!("    ({rel:?}, include_bytes!({abs:?})),\n"));
    }
    list.push_str("];\n");
    std::fs::write(out.join("monaco.rs"), list).expect("write monaco.rs");
}

/// Every file under `dir`: (its path relative to `root`, its absolute path).
fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).expect("read the web assets") {
        let p = e.expect("a web asset").path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            out.push((rel, p.to_string_lossy().into_owned()));
        }
    }
}
