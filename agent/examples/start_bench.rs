//! Helper for `bench/scenarios/start.py`: times `Runtime::create` (to the payload's exec) in
//! this process, as the agent would call it, and reads shims' memory.
//!
//! ```text
//! start_bench once STATE_DIR RUN_DIR LAYER INSTANCE   seconds of one create of /bin/true
//! start_bench mem STATE_DIR RUN_DIR LAYER INSTANCE N  N sleepers; "rss_kb pss_kb" per shim
//! start_bench hold STATE_DIR RUN_DIR LAYER INSTANCE    one sleeper until stdin closes
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_agent::layout::Layout;
use berth_agent::names::{IncarnationId, Names};
use berth_agent::runtime::{ContainerConfig, Runtime, RuntimeConfig};

fn runtime(state: &str, run: &str, instance: &str) -> Runtime {
    let mut cfg = RuntimeConfig::new(
        Layout {
            state_dir: PathBuf::from(state),
            run_dir: PathBuf::from(run),
        },
        Names::new(instance),
    );
    cfg.shim_path = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("../berth-shim");
    Runtime::new(cfg)
}

fn smaps_kb(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // Shims are reparented to us and reaped by the runtime, not left to pid 1.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let args: Vec<String> = std::env::args().collect();
    let (mode, state, run, layer, instance) = (&args[1], &args[2], &args[3], &args[4], &args[5]);
    let rt = runtime(state, run, instance);
    let layers = vec![PathBuf::from(layer)];
    match mode.as_str() {
        "once" => {
            let c = ContainerConfig::minimal("b", IncarnationId::random(), layers, &["/bin/true"]);
            let t = Instant::now();
            rt.create(&c).expect("create");
            let elapsed = t.elapsed();
            if std::env::var_os("BERTH_SHIM_TIMING").is_some() {
                let log = rt.shim_path(&c.name, &c.id).join("shim.log");
                eprint!("{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            rt.stop(&c.name, &c.id, None, Duration::from_secs(5))
                .expect("stop");
            rt.remove(&c.name, &c.id, berth_agent::runtime::BundleDir::Remove)
                .expect("remove");
            rt.prune_cgroups();
            println!("{}", elapsed.as_secs_f64());
        }
        "mem" => {
            let n: usize = args[6].parse().unwrap();
            let cs: Vec<ContainerConfig> = (0..n)
                .map(|i| {
                    ContainerConfig::minimal(
                        &format!("m{i}"),
                        IncarnationId::random(),
                        layers.clone(),
                        &["/bin/sleep", "1000"],
                    )
                })
                .collect();
            let started: Vec<_> = cs.iter().map(|c| rt.create(c).expect("create")).collect();
            for s in &started {
                println!(
                    "{} {}",
                    smaps_kb(s.shim_pid, "Rss:"),
                    smaps_kb(s.shim_pid, "Pss:")
                );
            }
            for c in &cs {
                rt.stop(&c.name, &c.id, Some(libc::SIGKILL), Duration::from_secs(5))
                    .expect("stop");
                rt.remove(&c.name, &c.id, berth_agent::runtime::BundleDir::Remove)
                    .expect("remove");
            }
            rt.prune_cgroups();
        }
        "hold" => {
            // One sleeper; prints the shim's pid and keeps it until stdin closes.
            let c = ContainerConfig::minimal(
                "h",
                IncarnationId::random(),
                layers,
                &["/bin/sleep", "1000"],
            );
            let s = rt.create(&c).expect("create");
            println!("{}", s.shim_pid);
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            rt.stop(&c.name, &c.id, Some(libc::SIGKILL), Duration::from_secs(5))
                .expect("stop");
            rt.remove(&c.name, &c.id, berth_agent::runtime::BundleDir::Remove)
                .expect("remove");
            rt.prune_cgroups();
        }
        m => panic!("unknown mode {m}"),
    }
}
