//! The architecture invariants of docs/ARCHITECTURE.md that a reading of the source can check:
//! which module may name which, and that the pure core and `spec` do no I/O. Each rule is data
//! (`rules()`, `IMPURE`); a new arrow that breaks one fails here with the file and the line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What lies above the kernel edges and the store: the loop, its policy and its commands.
const ABOVE_THE_EDGES: &[&str] = &[
    "host",
    "reconcile",
    "daemon",
    "api",
    "cli",
    "status",
    "desired",
    "backend",
    "operations",
];

/// (module, modules it must never name, why). A module is a top-level `crate::` name, and its
/// files are `src/<module>.rs` and everything under `src/<module>/`.
fn rules() -> Vec<(&'static str, Vec<&'static str>, &'static str)> {
    let above = |extra: &[&'static str]| -> Vec<&'static str> {
        ABOVE_THE_EDGES.iter().chain(extra).copied().collect()
    };
    vec![
        (
            "runtime",
            above(&["network", "store", "registry", "source", "report"]),
            "the runtime knows one container at a time; runtime and network meet in host",
        ),
        (
            "network",
            above(&["runtime", "store", "registry", "source", "report"]),
            "runtime and network never import each other; they meet in host through a netns path",
        ),
        (
            "registry",
            above(&["store", "runtime", "network"]),
            "the registry client knows nothing of containers or the store",
        ),
        (
            "store",
            above(&["runtime", "network"]),
            "the store knows nothing of containers",
        ),
        (
            "host",
            vec!["daemon", "api", "cli"],
            "host is below the loop and the commands: no arrow runs back up",
        ),
        (
            "api",
            vec!["runtime", "network", "host", "store", "registry"],
            "the API serves what the reconciler publishes and never reaches the kernel",
        ),
        (
            "clock",
            vec![
                "daemon", "host", "cli", "api", "runtime", "network", "store", "registry", "source",
            ],
            "clock is a leaf",
        ),
        (
            "reconcile",
            vec![
                "runtime",
                "network",
                "host",
                "store",
                "registry",
                "daemon",
                "api",
                "cli",
                "source",
                "report",
                "desired",
                "backend",
                "operations",
                "clock",
                "fsutil",
                "layout",
                "events",
                "metrics",
                "logging",
                "crashpoint",
            ],
            "the pure core reads values, not the host",
        ),
    ]
}

/// `cli` reaches the kernel only in these files: the in-process mode (`host`, under the state
/// dir's lock), `berth exec` and the log readers (`runtime`), and the image commands (`store`).
const CLI_KERNEL: &[(&str, &[&str])] = &[
    ("runtime", &["exec.rs", "logs.rs", "mod.rs"]),
    ("network", &[]),
    (
        "host",
        &["agent.rs", "doctor.rs", "local.rs", "prune.rs", "apply.rs"],
    ),
];

/// Text that means I/O or a clock, forbidden in the pure core and in `spec`.
const IMPURE: &[&str] = &[
    "std::fs",
    "tokio",
    "std::process",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "std::os::unix::net",
    "Instant::now",
    "SystemTime::now",
    "std::env::var",
    "File::open",
    "File::create",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_files(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src().join(format!("{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    rs_files(&src().join(module), &mut files);
    assert!(!files.is_empty(), "no source for module {module}");
    files
}

/// The code of a line, without a `//` comment (doc links are not dependencies). Strings are
/// left in: none of the names checked here appears in one.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The top-level modules a piece of code names through `crate::`: `crate::a::b` names `a`,
/// `crate::{a, b::c}` names `a` and `b` (nested braces are inside one name's path).
fn crate_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
                rest = &group[j..];
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

/// Every `crate::` use of a file, joined across lines so a `use crate::{..}` spanning several
/// is seen whole: (line number of the `crate::`, module named).
fn uses(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().map(code).collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if !line.contains("crate::") {
            continue;
        }
        // Enough of what follows for a multi-line brace group.
        let joined = lines[n..(n + 40).min(lines.len())].join(" ");
        let start = joined.find("crate::").unwrap();
        let head: String = {
            let s = &joined[start..];
            if s["crate::".len()..].starts_with('{') {
                let close = brace_end(s);
                s[..close].to_string()
            } else {
                line[line.find("crate::").unwrap()..].to_string()
            }
        };
        for name in crate_names(&head) {
            out.push((n + 1, name));
        }
        // Further `crate::` paths later on the same line.
        let tail = &line[line.find("crate::").unwrap() + 1..];
        for name in crate_names(tail) {
            out.push((n + 1, name));
        }
    }
    out
}

/// The index just past the brace group that `s` ("crate::{...") opens.
fn brace_end(s: &str) -> usize {
    let mut depth = 0;
    for (i, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn crate_names_reads_paths_and_groups() {
    let n = |s: &str| crate_names(s).into_iter().collect::<Vec<_>>();
    assert_eq!(n("use crate::runtime::exec::TIMED_OUT;"), ["runtime"]);
    assert_eq!(
        n("use crate::{fsutil, names::{IncarnationId, x}, network::Net};"),
        ["fsutil", "names", "network"]
    );
    assert_eq!(
        n("let x = crate::clock::now() + crate::host::y;"),
        ["clock", "host"]
    );
    assert!(n("// nothing").is_empty());
}

#[test]
fn modules_name_only_what_the_architecture_allows() {
    let mut broken = Vec::new();
    for (module, forbidden, why) in rules() {
        for f in module_files(module) {
            for (line, name) in uses(&f) {
                if forbidden.contains(&name.as_str()) {
                    broken.push(format!(
                        "src/{}:{line}: {module} names {name} ({why})",
                        rel(&f)
                    ));
                }
            }
        }
    }
    for f in module_files("cli") {
        let file = f.file_name().unwrap().to_str().unwrap().to_string();
        for (line, name) in uses(&f) {
            if let Some((_, allowed)) = CLI_KERNEL.iter().find(|(m, _)| *m == name)
                && !allowed.contains(&file.as_str())
            {
                broken.push(format!(
                    "src/{}:{line}: cli names {name} outside the files allowed to reach the \
                     kernel ({allowed:?})",
                    rel(&f)
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

fn impure_lines(files: &[PathBuf], base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            for word in IMPURE {
                if c.contains(word) {
                    found.push(format!(
                        "{}:{}: {word}",
                        f.strip_prefix(base).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn the_pure_core_does_no_io_and_reads_no_clock() {
    let files = module_files("reconcile");
    let found = impure_lines(&files, &src());
    assert!(
        found.is_empty(),
        "I/O or a clock in the pure core (reconcile):\n{}",
        found.join("\n")
    );
}

#[test]
fn spec_does_no_io_and_depends_on_nothing_of_the_agent() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec");
    let mut files = Vec::new();
    rs_files(&spec.join("src"), &mut files);
    assert!(!files.is_empty());
    // The schema generator and tests may read files; the library may not.
    files.retain(|f| !f.to_string_lossy().contains("/bin/"));
    let found = impure_lines(&files, &spec);
    assert!(found.is_empty(), "I/O in spec:\n{}", found.join("\n"));
    let manifest = std::fs::read_to_string(spec.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("berth-agent"),
        "spec/Cargo.toml depends on the agent"
    );
}

/// The checks can fail: a planted arrow and a planted clock read are caught.
#[test]
fn the_checks_catch_a_planted_violation() {
    let dir = std::env::temp_dir().join(format!("berth-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("planted.rs");
    std::fs::write(
        &f,
        "use crate::{names, runtime::exec};\nfn f() { let t = std::time::Instant::now(); }\n",
    )
    .unwrap();
    let names: Vec<String> = uses(&f).into_iter().map(|(_, n)| n).collect();
    assert!(names.contains(&"runtime".to_string()), "{names:?}");
    assert_eq!(impure_lines(std::slice::from_ref(&f), &dir).len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Text that means disk I/O on the loop's thread.
const LOOP_IO: &[&str] = &[
    "std::fs",
    "fsutil",
    "File::open",
    "File::create",
    ".scan()",
    "LastValid",
];

/// The loop only decides: its files (all of `daemon` but the spec store, whose jobs run on
/// blocking threads, and the tests) do no disk I/O.
#[test]
fn the_loop_never_touches_the_disk() {
    let mut found = Vec::new();
    for f in module_files("daemon") {
        let file = f.file_name().unwrap().to_str().unwrap();
        if ["specs.rs", "tests.rs"].contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            for word in LOOP_IO.iter().filter(|w| c.contains(**w)) {
                found.push(format!("src/{}:{}: {word}", rel(&f), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "disk I/O on the loop (run it in a spec job or on a blocking thread):\n{}",
        found.join("\n")
    );
}

/// Long functions still to be read as named steps, as (file, "fn name "): none left (the
/// shim's `supervise` was the last). A function listed here must still be long.
const NOT_YET_SPLIT: &[(&str, &str)] = &[];

/// Functions of the product code (not tests) longer than this say why in a comment holding
/// "Long because" (in their doc comment or first lines); the rest read as named steps.
const MAX_FN_LINES: usize = 100;

/// (file, line, name, length) of every function over [`MAX_FN_LINES`] without its reason.
fn long_functions(files: &[PathBuf], base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Generated tables (seccomp's syscall numbers) are data, written by their generator.
        if text
            .lines()
            .next()
            .is_some_and(|l| l.contains("@generated"))
        {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        // Test modules sit at the end of a file.
        let end = lines
            .iter()
            .position(|l| l.trim() == "#[cfg(test)]")
            .unwrap_or(lines.len());
        for (i, line) in lines[..end].iter().enumerate() {
            let Some(fn_name) = fn_name(line) else {
                continue;
            };
            if line.trim_end().ends_with(';') {
                continue;
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let close = format!("{indent}}}");
            let Some(len) = lines[i..end].iter().position(|l| *l == close) else {
                continue;
            };
            if len < MAX_FN_LINES {
                continue;
            }
            let mut before = i;
            while before > 0 {
                let t = lines[before - 1].trim_start();
                if t.starts_with("//") || t.starts_with("#[") {
                    before -= 1;
                } else {
                    break;
                }
            }
            let said = lines[before..(i + 6).min(end)]
                .iter()
                .any(|l| l.contains("Long because"));
            if !said {
                found.push(format!(
                    "{}:{}: fn {fn_name} is {} lines",
                    f.strip_prefix(base).unwrap().display(),
                    i + 1,
                    len + 1
                ));
            }
        }
    }
    found
}

/// The name of the function a line opens, if it opens one.
fn fn_name(line: &str) -> Option<String> {
    let code = code(line).trim_start();
    let mut words = code.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        let qualifier =
            w.starts_with("pub") || ["const", "async", "unsafe", "extern", "\"C\""].contains(w);
        if !qualifier {
            break;
        }
        words.next();
    }
    if words.next()? != "fn" {
        return None;
    }
    let rest = words.next()?;
    Some(
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect(),
    )
}

#[test]
fn long_functions_say_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    rs_files(&root.join("spec/src"), &mut files);
    let mut found = long_functions(&files, root);
    // Known and not split yet (issue 15): each must still be long, so the list stays true.
    for (file, function) in NOT_YET_SPLIT {
        let at = found
            .iter()
            .position(|f| f.starts_with(file) && f.contains(function));
        assert!(
            at.is_some(),
            "{file} {function}is no longer long: take it off NOT_YET_SPLIT"
        );
        found.remove(at.expect("checked"));
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_FN_LINES} lines without a \"Long because\" comment (split them \
         into named steps, or say why not):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_length_check_finds_a_long_function() {
    let dir = std::env::temp_dir().join(format!("berth-arch-long-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = "    x += 1;\n".repeat(MAX_FN_LINES);
    let f = dir.join("long.rs");
    std::fs::write(
        &f,
        format!("pub fn long() {{\n{body}}}\n\nfn short() {{\n}}\n"),
    )
    .unwrap();
    let found = long_functions(std::slice::from_ref(&f), &dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("fn long is 102 lines"), "{found:?}");
    std::fs::write(
        &f,
        format!("/// Long because: a table.\npub fn long() {{\n{body}}}\n"),
    )
    .unwrap();
    assert!(long_functions(std::slice::from_ref(&f), &dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Syscalls go through one crate per concern (docs/ARCHITECTURE.md, "Syscalls: one crate per
/// concern"): (concern, the crate it goes through, path prefixes that would take it through
/// another). Product code of `agent/` and `spec/` only; tests fork and poke as they like.
const SYSCALL_CONCERNS: &[(&str, &str, &[&str])] = &[
    (
        "namespaces (setns, unshare)",
        "nix::sched",
        &[
            "libc::setns",
            "libc::unshare",
            "rustix::thread::move_into",
            "rustix::thread::unshare",
        ],
    ),
    (
        "the mount table (mount(2), umount2, pivot_root) and the hostname",
        "nix::mount, nix::unistd",
        &[
            "libc::mount",
            "libc::umount",
            "libc::pivot_root",
            "libc::sethostname",
            "rustix::mount::mount",
            "rustix::mount::unmount",
            "rustix::mount::MountFlags",
            "rustix::mount::UnmountFlags",
            "rustix::mount::MountPropagationFlags",
            "rustix::process::pivot_root",
            "rustix::system::sethostname",
        ],
    ),
    (
        "the fd-based mount API (fsopen, fsconfig, fsmount, open_tree, move_mount)",
        "rustix::mount",
        &[
            "libc::SYS_fsopen",
            "libc::SYS_fsconfig",
            "libc::SYS_fsmount",
            "libc::SYS_open_tree",
            "libc::SYS_move_mount",
        ],
    ),
    (
        "files and dirs (open*, stat*, statfs, mkdir, mknod, links, chown, chmod, times, \
         xattrs, memfd and seals, flock, device numbers)",
        "rustix::fs",
        &[
            "libc::open",
            "libc::stat",
            "libc::fstat",
            "libc::lstat",
            "libc::mkdir",
            "libc::mknod",
            "libc::unlink",
            "libc::link",
            "libc::symlink",
            "libc::readlink",
            "libc::rename",
            "libc::chown",
            "libc::fchown",
            "libc::lchown",
            "libc::chmod",
            "libc::fchmod",
            "libc::utimensat",
            "libc::futimens",
            "libc::setxattr",
            "libc::fsetxattr",
            "libc::memfd_create",
            "libc::flock",
            "libc::syncfs",
            "libc::makedev",
            "libc::major",
            "libc::minor",
            "nix::fcntl",
            "nix::sys::stat",
            "nix::sys::statfs",
            "nix::sys::statvfs",
            "nix::dir",
            "nix::sys::memfd",
        ],
    ),
    (
        "sockets (unix, inet, options, fd passing)",
        "rustix::net",
        &[
            "libc::socket",
            "libc::bind",
            "libc::connect",
            "libc::listen",
            "libc::accept",
            "libc::sendmsg",
            "libc::recvmsg",
            "libc::setsockopt",
            "libc::getsockopt",
            "nix::sys::socket",
        ],
    ),
    (
        "pipes and splice",
        "rustix::pipe",
        &[
            "libc::pipe",
            "libc::splice",
            "libc::tee",
            "nix::unistd::pipe",
        ],
    ),
    (
        "resource limits",
        "rustix::process",
        &[
            "libc::getrlimit",
            "libc::setrlimit",
            "libc::prlimit",
            "nix::sys::resource",
        ],
    ),
    (
        "this process's ids",
        "rustix::process",
        &[
            "libc::getpid",
            "libc::getppid",
            "libc::getuid",
            "libc::geteuid",
            "libc::getgid",
            "libc::getegid",
            "nix::unistd::get",
        ],
    ),
    (
        "clocks",
        "nix::time",
        &["libc::clock_gettime", "rustix::time"],
    ),
    (
        "the user database",
        "nix::unistd::User",
        &["libc::getpw", "libc::getgr"],
    ),
    (
        "poll (index-addressed arrays whose absent slots are fd -1, which neither crate's \
         borrowed PollFd can hold)",
        "libc",
        &["nix::poll", "rustix::event::poll", "rustix::event::PollFd"],
    ),
    (
        "reads and writes by fd number (stdio, the relays' fds), and fds by number (close_range, \
         /proc/self/fd)",
        "libc",
        &[
            "nix::unistd::read",
            "nix::unistd::write",
            "nix::unistd::close",
            "nix::unistd::dup",
            "rustix::io::read",
            "rustix::io::write",
            "rustix::io::dup",
            "rustix::io::close",
            "rustix::io::fcntl",
        ],
    ),
    (
        "processes, signals and privileges (fork, clone, waitpid, _exit, execve, kill, pidfd, \
         setsid, prctl, capabilities, setres[ug]id, setgroups, chroot, signal dispositions, \
         signalfd) and terminals",
        "libc",
        &[
            "nix::unistd::fork",
            "nix::sched::clone",
            "nix::sys::wait",
            "nix::sys::signal",
            "nix::sys::prctl",
            "nix::unistd::setsid",
            "nix::unistd::exec",
            "nix::unistd::setres",
            "nix::unistd::setgroups",
            "nix::unistd::chroot",
            "nix::unistd::_exit",
            "nix::pty",
            "nix::sys::termios",
            "nix::ioctl",
            "rustix::process::kill",
            "rustix::process::wait",
            "rustix::process::pidfd",
            "rustix::process::setsid",
            "rustix::process::set_",
            "rustix::process::chroot",
            "rustix::process::ioctl",
            "rustix::thread::set_",
            "rustix::thread::capabilit",
            "rustix::runtime",
            "rustix::termios",
            "rustix::pty",
        ],
    ),
];

/// What nix is kept for (the concerns above it goes through); any other nix path is a concern
/// to place in the table first.
const NIX_ALLOWED: &[&str] = &[
    "nix::sched::setns",
    "nix::sched::unshare",
    "nix::sched::CloneFlags",
    "nix::mount",
    "nix::unistd::pivot_root",
    "nix::unistd::sethostname",
    "nix::unistd::User",
    "nix::time",
    "nix::errno",
    "nix::Result",
];

/// The mark a raw `libc::syscall` carries in a comment just above it, saying why neither nix
/// nor rustix is used.
const RAW_SYSCALL_MARK: &str = "Raw syscall:";

/// The top-level brace group `s` ("{...") opens, without its braces.
fn brace_group(s: &str) -> &str {
    let end = brace_end(s);
    &s[1..end.saturating_sub(1).max(1)]
}

/// The paths a `use` group names under `prefix`: `{a, b::{c, d as e}, self}` under `p` is
/// `p::a`, `p::b::c`, `p::b::d`, `p`.
fn expand_group(prefix: &str, group: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        if let Some(b) = item.find('{') {
            let head = item[..b].trim().trim_end_matches("::");
            let inner = brace_group(&item[b..]);
            let p = if head.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}::{head}")
            };
            expand_group(&p, inner, out);
        } else {
            let name = item.split(" as ").next().unwrap_or(item).trim();
            out.push(if name == "self" {
                prefix.to_string()
            } else {
                format!("{prefix}::{name}")
            });
        }
    }
}

/// Every path into libc, nix or rustix that the product code of a file names, `use` groups
/// expanded (so a function imported and then called by its short name is seen): (line, path).
fn syscall_paths(text: &str) -> Vec<(usize, String)> {
    let raw: Vec<&str> = text.lines().collect();
    let end = raw
        .iter()
        .position(|l| l.trim() == "#[cfg(test)]")
        .unwrap_or(raw.len());
    let lines: Vec<&str> = raw[..end].iter().map(|l| code(l)).collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        for krate in ["libc::", "nix::", "rustix::"] {
            for (i, _) in line.match_indices(krate) {
                if line[..i].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                let path: String = line[i..]
                    .chars()
                    .take_while(|&c| is_ident(c) || c == ':')
                    .collect();
                let after = &line[i + path.len()..];
                if path.ends_with("::") && after.starts_with('{') {
                    // A group, perhaps over several lines.
                    let joined = lines[n..(n + 40).min(lines.len())].join(" ");
                    let from = joined.find(&line[i..]).unwrap_or(0) + path.len();
                    let mut paths = Vec::new();
                    expand_group(
                        path.trim_end_matches("::"),
                        brace_group(&joined[from..]),
                        &mut paths,
                    );
                    out.extend(paths.into_iter().map(|p| (n + 1, p)));
                } else {
                    out.push((n + 1, path.trim_end_matches("::").to_string()));
                }
            }
        }
    }
    out
}

/// Where the product code takes a concern through a crate the table does not give it, names
/// nix for anything it is not kept for, or makes a raw syscall without saying why.
fn syscall_violations(files: &[PathBuf], base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let at = |line: usize| format!("{}:{line}", f.strip_prefix(base).unwrap().display());
        for (line, path) in syscall_paths(&text) {
            for (concern, krate, forbidden) in SYSCALL_CONCERNS {
                if let Some(p) = forbidden.iter().find(|p| path.starts_with(**p)) {
                    found.push(format!(
                        "{}: {path} ({p}...): {concern} go through {krate}",
                        at(line)
                    ));
                }
            }
            if path.starts_with("nix::") && !NIX_ALLOWED.iter().any(|p| path.starts_with(p)) {
                found.push(format!(
                    "{}: {path}: nix is kept for {NIX_ALLOWED:?} only",
                    at(line)
                ));
            }
            if path == "libc::syscall" {
                let lines: Vec<&str> = text.lines().collect();
                let said = lines[line.saturating_sub(12)..line]
                    .iter()
                    .any(|l| l.contains(RAW_SYSCALL_MARK));
                if !said {
                    found.push(format!(
                        "{}: libc::syscall without a \"{RAW_SYSCALL_MARK}\" comment saying why \
                         neither nix nor rustix has it",
                        at(line)
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn syscall_paths_expand_use_groups() {
    let text = "use nix::mount::{MsFlags, mount as m};\nuse rustix::{fs::{open, Mode}, \
                io};\nfn f() { let _ = libc::getpid(); }\n#[cfg(test)]\nmod t { fn g() { \
                libc::fork(); } }\n";
    let paths: Vec<String> = syscall_paths(text).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        paths,
        [
            "nix::mount::MsFlags",
            "nix::mount::mount",
            "rustix::fs::open",
            "rustix::fs::Mode",
            "rustix::io",
            "libc::getpid",
        ]
    );
}

#[test]
fn each_syscall_concern_goes_through_one_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    rs_files(&root.join("spec/src"), &mut files);
    let found = syscall_violations(&files, root);
    assert!(
        found.is_empty(),
        "syscalls through a crate the table in docs/ARCHITECTURE.md does not give them:\n{}",
        found.join("\n")
    );
}

/// The syscall check can fail: a planted `libc::setns`, a classic mount through rustix
/// (imported, then called by its short name), a nix poll and an unexplained raw syscall are
/// each caught; the same raw syscall with its reason is not.
#[test]
fn the_syscall_check_catches_a_planted_violation() {
    let dir = std::env::temp_dir().join(format!("berth-arch-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("planted.rs");
    std::fs::write(
        &f,
        "use rustix::mount::{mount, MountFlags};\n\
         fn f(fd: i32) {\n\
             unsafe { libc::setns(fd, 0) };\n\
             let _ = nix::poll::poll;\n\
             unsafe { libc::syscall(libc::SYS_gettid) };\n\
         }\n",
    )
    .unwrap();
    let found = syscall_violations(std::slice::from_ref(&f), &dir);
    for planted in [
        "rustix::mount::mount ",
        "rustix::mount::MountFlags ",
        "libc::setns ",
        "nix::poll::poll ",
        "libc::syscall without",
    ] {
        assert!(
            found.iter().any(|v| v.contains(planted)),
            "{planted} not caught: {found:?}"
        );
    }
    std::fs::write(
        &f,
        "fn f() {\n    // Raw syscall: a planted one.\n    unsafe { libc::syscall(1) };\n}\n",
    )
    .unwrap();
    assert!(
        syscall_violations(std::slice::from_ref(&f), &dir).is_empty(),
        "a raw syscall with its reason was refused"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Calls that fork or clone: sound only in a single-threaded process, which the function
/// making them cannot check, so it is an `unsafe fn` whose `# Safety` says so.
const FORKS: &[&str] = &["libc::fork(", "libc::SYS_clone,", "libc::SYS_clone3,"];

/// (file:line, function) of every fork or clone in the product code whose function is not an
/// `unsafe fn` with a `# Safety` section.
fn forks_in_safe_functions(files: &[PathBuf], base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let end = lines
            .iter()
            .position(|l| l.trim() == "#[cfg(test)]")
            .unwrap_or(lines.len());
        for (i, line) in lines[..end].iter().enumerate() {
            if !FORKS.iter().any(|f| code(line).contains(f)) {
                continue;
            }
            let Some(open) = (0..=i).rev().find(|&j| fn_name(lines[j]).is_some()) else {
                continue;
            };
            let mut doc = open;
            while doc > 0 && {
                let t = lines[doc - 1].trim_start();
                t.starts_with("///") || t.starts_with("#[")
            } {
                doc -= 1;
            }
            let is_unsafe = code(lines[open]).contains("unsafe fn ");
            let says = lines[doc..open].iter().any(|l| l.contains("# Safety"));
            if !(is_unsafe && says) {
                found.push(format!(
                    "{}:{}: fn {} forks or clones but is not an unsafe fn with a # Safety \
                     section",
                    f.strip_prefix(base).unwrap().display(),
                    i + 1,
                    fn_name(lines[open]).unwrap_or_default()
                ));
            }
        }
    }
    found
}

#[test]
fn functions_that_fork_are_unsafe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    let found = forks_in_safe_functions(&files, root);
    assert!(found.is_empty(), "{}", found.join("\n"));
    // And the check can fail.
    let dir = std::env::temp_dir().join(format!("berth-arch-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("planted.rs");
    std::fs::write(
        &f,
        "/// Forks.\npub fn f() -> i32 {\n    // SAFETY: none.\n    unsafe { libc::fork() }\n}\n",
    )
    .unwrap();
    assert_eq!(
        forks_in_safe_functions(std::slice::from_ref(&f), &dir).len(),
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
