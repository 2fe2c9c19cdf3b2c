//! Bundles the web terminal's front-end (xterm.js and its fit addon, from
//! the npm registry) into the binary: `scripts/web-assets.sh` fetches the
//! pinned, integrity-checked packages (cached under /var/cache/berth/npm)
//! and the files land in OUT_DIR/web for `include_bytes!`.

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
}
