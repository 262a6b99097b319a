//! The spec dir loader against a real filesystem: drop-ins, env files, and every kind of file
//! it must refuse without blocking or reading outside the spec dir.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_agent::source::load::{self, DirError, FileError, LoadedSet, MAX_FILE_SIZE, SpecError};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn load(dir: &Path) -> LoadedSet {
    load::load_dir(dir).unwrap()
}

fn file_errors<'a>(set: &'a LoadedSet, name: &str) -> &'a [FileError] {
    match &set.specs[name] {
        Err(SpecError::Files(e)) => e,
        other => panic!("{name}: expected file errors, got {other:?}"),
    }
}

#[test]
fn loads_specs_dropins_and_env_files() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(
        d,
        "web.toml",
        "image = \"nginx\"\nenv_files = [\"web.env\"]\nports = [\"8080:80\"]\n",
    );
    write(d, "web.env", "A=1\nB=2\n");
    write(d, "web.toml.d/20-b.toml", "[env]\nB = \"dropin-20\"\n");
    write(
        d,
        "web.toml.d/10-a.toml",
        "[env]\nB = \"dropin-10\"\nC = \"c\"\n",
    );
    write(d, "web.toml.d/README.md", "not a drop-in");
    write(d, "db.toml", "image = \"postgres\"\n");
    write(d, "notes.md", "ignored");
    write(d, ".hidden.toml", "garbage");
    write(d, "web.toml~", "garbage");
    write(d, ".#web.toml", "garbage");
    write(d, "web.toml.swp", "garbage");
    let set = load(d);
    assert!(set.is_clean(), "{set:#?}");
    assert_eq!(set.specs.keys().collect::<Vec<_>>(), ["db", "web"]);
    let web = set.specs["web"].as_ref().unwrap();
    assert_eq!(web.spec.env.get("A").unwrap(), "1");
    assert_eq!(web.spec.env.get("B").unwrap(), "dropin-20");
    assert_eq!(web.spec.env.get("C").unwrap(), "c");
    let files: Vec<String> = web
        .files
        .iter()
        .map(|f| f.strip_prefix(d).unwrap().display().to_string())
        .collect();
    assert_eq!(
        files,
        [
            "web.toml",
            "web.toml.d/10-a.toml",
            "web.toml.d/20-b.toml",
            "web.env"
        ]
    );
}

#[test]
fn missing_dir_is_not_an_empty_dir() {
    let t = tempfile::tempdir().unwrap();
    let empty = load(t.path());
    assert!(empty.specs.is_empty() && empty.is_clean());
    let gone = t.path().join("gone");
    assert!(matches!(
        load::load_dir(&gone),
        Err(DirError::Missing { .. })
    ));
    write(t.path(), "file", "x");
    assert!(matches!(
        load::load_dir(&t.path().join("file")),
        Err(DirError::NotADirectory { .. })
    ));
}

#[test]
fn symlinks_must_stay_inside_the_spec_dir() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("specs");
    fs::create_dir(&d).unwrap();
    let outside = t.path().join("outside.toml");
    fs::write(&outside, "image = \"nginx\"\n").unwrap();
    write(&d, "real.toml", "image = \"nginx\"\n");
    symlink("real.toml", d.join("alias.toml")).unwrap();
    symlink(&outside, d.join("escape.toml")).unwrap();
    symlink("/etc/shadow", d.join("shadow.toml")).unwrap();
    write(
        &d,
        "envy.toml",
        "image = \"nginx\"\nenv_files = [\"secret.env\"]\n",
    );
    symlink("/etc/shadow", d.join("secret.env")).unwrap();
    let set = load(&d);
    assert!(set.specs["alias"].is_ok());
    assert!(set.specs["real"].is_ok());
    for name in ["escape", "shadow"] {
        let e = file_errors(&set, name);
        assert!(matches!(e[0], FileError::SymlinkEscapes { .. }), "{e:?}");
        assert!(
            e[0].to_string()
                .contains("symlink resolves outside the spec dir")
        );
    }
    let Err(SpecError::Invalid(diags)) = &set.specs["envy"] else {
        panic!("{:?}", set.specs["envy"])
    };
    assert!(
        diags[0]
            .message
            .contains("symlink resolves outside the spec dir"),
        "{diags:?}"
    );
    // A spec dir that is itself reached through a symlink is fine.
    let link = t.path().join("specs-link");
    symlink(&d, &link).unwrap();
    assert!(load(&link).specs["alias"].is_ok());
}

#[test]
fn a_dropin_dir_symlinked_outside_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("specs");
    write(&d, "web.toml", "image = \"nginx\"\n");
    write(t.path(), "elsewhere/10.toml", "state = \"stopped\"\n");
    symlink(t.path().join("elsewhere"), d.join("web.toml.d")).unwrap();
    let set = load(&d);
    assert!(matches!(
        file_errors(&set, "web")[0],
        FileError::SymlinkEscapes { .. }
    ));
}

#[test]
fn non_regular_files_are_refused_without_blocking() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let fifo = d.join("x.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    fs::create_dir(d.join("y.toml")).unwrap();
    symlink("/dev/null", d.join("dev.toml")).unwrap();
    write(d, "ok.toml", "image = \"nginx\"\n");
    let start = Instant::now();
    let set = load(d);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the loader blocked"
    );
    assert!(matches!(
        file_errors(&set, "x")[0],
        FileError::NotRegular { kind: "a FIFO", .. }
    ));
    assert!(matches!(
        file_errors(&set, "y")[0],
        FileError::NotRegular {
            kind: "a directory",
            ..
        }
    ));
    // /dev/null is outside the spec dir, which is checked first.
    assert!(matches!(
        file_errors(&set, "dev")[0],
        FileError::SymlinkEscapes { .. }
    ));
    assert!(set.specs["ok"].is_ok());
    // A FIFO read directly (not through the dir scan) is refused just as fast.
    let e = load::read_text(d, &fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
}

#[test]
fn big_and_binary_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let mut big = String::from("image = \"nginx\"\n");
    while (big.len() as u64) <= MAX_FILE_SIZE {
        big.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    write(d, "big.toml", &big);
    fs::write(d.join("bin.toml"), [0xff, 0xfe, 0x00]).unwrap();
    let set = load(d);
    assert!(matches!(
        file_errors(&set, "big")[0],
        FileError::TooLarge { .. }
    ));
    assert!(matches!(
        file_errors(&set, "bin")[0],
        FileError::NotUtf8 { .. }
    ));
    let lines = set.specs["big"].as_ref().unwrap_err().lines();
    assert!(
        lines[0].ends_with(&format!(
            "big.toml: error: larger than {MAX_FILE_SIZE} bytes"
        )),
        "{lines:?}"
    );
}

#[test]
fn set_problems_are_reported_beside_valid_specs() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(d, "a.toml", "image = \"nginx\"\nports = [\"8080:80\"]\n");
    write(
        d,
        "b.toml",
        "image = \"nginx\"\nports = [\"8080:80\"]\ndepends_on = [\"nope\"]\n",
    );
    let set = load(d);
    assert!(set.specs.values().all(Result::is_ok));
    assert_eq!(set.set_diagnostics.len(), 2, "{:#?}", set.set_diagnostics);
    assert!(!set.is_clean());
}

#[test]
fn one_spec_loads_alone() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "web.toml", "image = \"nginx\"\n");
    let r = load::load_one(t.path(), "web", &Default::default()).unwrap();
    assert_eq!(r.unwrap().spec.name, "web");
    let r = load::load_one(t.path(), "absent", &Default::default()).unwrap();
    assert!(matches!(r, Err(SpecError::Files(_))));
}

/// The agent's rescans reuse unchanged specs; every kind of change is still seen.
#[test]
fn cached_rescans_see_every_change() {
    use berth_agent::source::load::{LoadCache, load_dir_cached};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let defaults = berth_spec::SpecDefaults::default();
    let mut cache = LoadCache::default();
    std::fs::write(
        dir.join("web.toml"),
        "image = \"nginx:1\"\nenv_files = [\"web.env\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("web.env"), "A=1\n").unwrap();
    let env_of = |cache: &mut LoadCache| {
        let set = load_dir_cached(dir, &defaults, cache).unwrap();
        set.specs["web"].as_ref().unwrap().spec.env.clone()
    };
    assert_eq!(env_of(&mut cache).get("A").unwrap(), "1");
    assert_eq!(
        env_of(&mut cache).get("A").unwrap(),
        "1",
        "unchanged: the same"
    );

    // Same size, same mtime (as `rsync -t` leaves it): the ctime still tells.
    let mtime = std::fs::metadata(dir.join("web.env"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::write(dir.join("web.env"), "A=2\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.join("web.env"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(env_of(&mut cache).get("A").unwrap(), "2");

    // A drop-in appears, then changes, then goes.
    std::fs::create_dir(dir.join("web.toml.d")).unwrap();
    std::fs::write(dir.join("web.toml.d/10.toml"), "env = { B = \"x\" }\n").unwrap();
    assert_eq!(env_of(&mut cache).get("B").unwrap(), "x");
    std::fs::write(dir.join("web.toml.d/10.toml"), "env = { B = \"y\" }\n").unwrap();
    assert_eq!(env_of(&mut cache).get("B").unwrap(), "y");
    std::fs::remove_file(dir.join("web.toml.d/10.toml")).unwrap();
    assert!(!env_of(&mut cache).contains_key("B"));

    // A symlink swapped to another target.
    std::fs::write(dir.join("v2.toml.txt"), "image = \"nginx:2\"\n").unwrap();
    std::fs::remove_file(dir.join("web.toml")).unwrap();
    std::os::unix::fs::symlink("v2.toml.txt", dir.join("web.toml")).unwrap();
    let set = load_dir_cached(dir, &defaults, &mut cache).unwrap();
    assert_eq!(
        set.specs["web"].as_ref().unwrap().spec.image.to_string(),
        "docker.io/library/nginx:2"
    );
}

/// A spec read long enough ago is reused as it was (its files' stamps are trusted past the
/// racy window), and a drop-in dir appearing beside it or going is still seen: the dir's
/// listing says which specs have one, so the others need no stat for it.
#[test]
fn a_cached_spec_sees_its_dropin_dir_appear_and_go() {
    use berth_agent::source::load::{LoadCache, load_dir_cached};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let defaults = berth_spec::SpecDefaults::default();
    let mut cache = LoadCache::default();
    std::fs::write(dir.join("web.toml"), "image = \"nginx:1\"\n").unwrap();
    std::fs::write(dir.join("db.toml"), "image = \"postgres:16\"\n").unwrap();
    // Past the racy window (two seconds of file times), a stamp says the file is the one read.
    let written = std::time::Instant::now();
    while written.elapsed() < std::time::Duration::from_millis(2_100) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut load = || load_dir_cached(dir, &defaults, &mut cache).unwrap();
    let spec_of = |set: &berth_agent::source::load::LoadedSet, name: &str| {
        set.specs[name].as_ref().unwrap().spec.clone()
    };
    let first = load();
    let again = load();
    assert!(
        std::sync::Arc::ptr_eq(&spec_of(&first, "web"), &spec_of(&again, "web")),
        "an unchanged spec is reused, not read again"
    );

    std::fs::create_dir(dir.join("web.toml.d")).unwrap();
    std::fs::write(dir.join("web.toml.d/10.toml"), "env = { B = \"x\" }\n").unwrap();
    let with = load();
    assert_eq!(
        spec_of(&with, "web").env.get("B"),
        Some("x"),
        "a drop-in dir appears"
    );
    assert!(
        std::sync::Arc::ptr_eq(&spec_of(&first, "db"), &spec_of(&with, "db")),
        "the other spec is still reused"
    );
    std::fs::remove_dir_all(dir.join("web.toml.d")).unwrap();
    let without = load();
    assert_eq!(
        spec_of(&without, "web").env.get("B"),
        None,
        "the drop-in dir goes"
    );
}
