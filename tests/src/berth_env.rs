//! A throwaway berth config and state dir wired to the test registries: the plain and token
//! registries listed as insecure (plain HTTP), the TLS one with its CA file, credentials for
//! both authenticated ones in a Docker config.json.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::registry::TestRegistry;

pub struct BerthEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
}

impl BerthEnv {
    /// A config for the registries that are configured in this test run, plus `extra` TOML
    /// appended (e.g. an `[images]` table).
    pub fn new(extra: &str) -> BerthEnv {
        let dir = tempfile::Builder::new()
            .prefix("berth-img-")
            .tempdir()
            .unwrap();
        let state_dir = dir.path().join("state");
        let images_dir = dir.path().join("import");
        let plain = TestRegistry::plain();
        let tls = TestRegistry::tls();
        let token = TestRegistry::token();
        let mut auths = serde_json::Map::new();
        for r in [&tls, &token] {
            if let serde_json::Value::Object(m) = &r.auth_json()["auths"] {
                auths.extend(m.clone());
            }
        }
        let auth_file = dir.path().join("auth.json");
        std::fs::write(
            &auth_file,
            serde_json::to_vec(&serde_json::json!({"auths": auths})).unwrap(),
        )
        .unwrap();
        let config = dir.path().join("berth.toml");
        let text = format!(
            r#"instance = "bt"
state_dir = "{state}"
run_dir = "{run}"
specs_dir = "{specs}"
images_dir = "{images}"
auth_file = "{auth}"

[registries."{plain}"]
insecure = true

[registries."{token}"]
insecure = true

[registries."{tls}"]
ca_file = "{ca}"

{extra}
"#,
            state = state_dir.display(),
            run = dir.path().join("run").display(),
            specs = dir.path().join("specs").display(),
            images = images_dir.display(),
            auth = auth_file.display(),
            plain = plain.addr,
            token = token.addr,
            tls = tls.addr,
            ca = tls.ca.as_ref().unwrap().display(),
        );
        std::fs::write(&config, text).unwrap();
        BerthEnv {
            dir,
            config,
            state_dir,
            images_dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `berth --config <this config> args...`.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(crate::berth_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }
}
