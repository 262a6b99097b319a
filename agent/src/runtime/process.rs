//! What the container runs: argv, env, cwd and user, resolved from the image config and the
//! spec. Pure: the user name is resolved later, inside the container's rootfs (see `passwd`).

use berth_spec::model::{ContainerSpec, User, UserId};
use serde::{Deserialize, Serialize};

use crate::image::ImageConfig;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=value`, one per key, in a stable order.
    pub env: Vec<String>,
    /// Absolute; created when missing.
    pub cwd: String,
    /// `None`: root.
    pub user: Option<User>,
    /// Supplementary groups beyond the user's own (the spec's `group_add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<UserId>,
}

/// Entrypoint+Cmd as Docker combines them, env merged (spec wins, PATH defaulted), the spec's
/// workdir and user over the image's.
pub fn resolve_process(spec: &ContainerSpec, image: &ImageConfig) -> ProcessSpec {
    // Docker: setting an entrypoint drops the image's Cmd unless a command is also given.
    let (entrypoint, cmd) = match (&spec.extra.entrypoint, &spec.command) {
        (Some(e), Some(c)) => (e.clone(), c.clone()),
        (Some(e), None) => (e.clone(), Vec::new()),
        (None, Some(c)) => (image.entrypoint.clone().unwrap_or_default(), c.clone()),
        (None, None) => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let mut args = entrypoint;
    args.extend(cmd);

    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let cwd = spec
        .extra
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let user = spec
        .extra
        .user
        .clone()
        .or_else(|| image.user.as_deref().and_then(parse_user));
    ProcessSpec {
        args,
        env,
        cwd,
        user,
        group_add: spec.extra.group_add.clone(),
    }
}

/// Parses an image's `User`: `name`, `uid`, `name:group`, `uid:gid`; empty means root.
pub fn parse_user(s: &str) -> Option<User> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let id = |p: &str| match p.parse::<u32>() {
        Ok(n) => UserId::Id(n),
        Err(_) => UserId::Name(p.to_string()),
    };
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (s, None),
    };
    Some(User {
        user: id(u),
        group: g.map(id),
    })
}

/// Looks up `PATH` in a `KEY=value` list.
pub fn env_path(env: &[String]) -> &str {
    env.iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::ImageSource;

    fn spec() -> ContainerSpec {
        ContainerSpec::with_defaults("web", ImageSource::parse("busybox").unwrap())
    }

    fn image() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/img/bin".into(), "A=1".into(), "B=2".into()],
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into(), "-v".into()]),
            working_dir: Some("/app".into()),
            user: Some("nobody:nogroup".into()),
            ..Default::default()
        }
    }

    #[test]
    fn image_defaults_apply() {
        let p = resolve_process(&spec(), &image());
        assert_eq!(p.args, ["/entry", "serve", "-v"]);
        assert_eq!(p.env, ["PATH=/img/bin", "A=1", "B=2"]);
        assert_eq!(p.cwd, "/app");
        assert_eq!(
            p.user,
            Some(User {
                user: UserId::Name("nobody".into()),
                group: Some(UserId::Name("nogroup".into()))
            })
        );
    }

    #[test]
    fn spec_overrides_like_docker() {
        let mut s = spec();
        s.command = Some(vec!["run".into()]);
        assert_eq!(resolve_process(&s, &image()).args, ["/entry", "run"]);
        s.extra.entrypoint = Some(vec!["/bin/sh".into()]);
        s.command = None;
        assert_eq!(resolve_process(&s, &image()).args, ["/bin/sh"]);
        s.command = Some(vec!["-c".into(), "x".into()]);
        assert_eq!(resolve_process(&s, &image()).args, ["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn env_spec_wins_and_path_defaults() {
        let mut s = spec();
        s.env.insert("B".into(), "spec".into());
        s.env.insert("C".into(), "3".into());
        let p = resolve_process(&s, &image());
        assert_eq!(p.env, ["PATH=/img/bin", "A=1", "B=spec", "C=3"]);
        let p = resolve_process(&s, &ImageConfig::default());
        assert_eq!(p.env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(env_path(&p.env), DEFAULT_PATH);
        assert_eq!(p.cwd, "/");
        assert_eq!(p.user, None);
    }

    #[test]
    fn users_parse() {
        assert_eq!(parse_user(""), None);
        assert_eq!(
            parse_user("1000:50"),
            Some(User {
                user: UserId::Id(1000),
                group: Some(UserId::Id(50))
            })
        );
        assert_eq!(
            parse_user("app"),
            Some(User {
                user: UserId::Name("app".into()),
                group: None
            })
        );
    }
}
