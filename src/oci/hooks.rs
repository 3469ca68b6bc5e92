//! runtime-spec's hooks as the lifecycle runs them: `prestart`, `createRuntime` and
//! `createContainer` inside the launch (the launcher runs those: see
//! `launcher::hooks`), `startContainer` in the container's namespaces and `poststart`
//! in ours during `start`, `poststop` during `delete`. A failing hook before the
//! process runs fails the operation; after it (`poststart`, `poststop`) it is a warning.

use super::state::StateReport;
use crate::launcher::hooks::{HookCommand, LaunchHooks};
use oci_spec::runtime::{Hook, Hooks};
use std::time::Duration;

/// Every stage with its hooks, in runtime-spec's names and order.
pub fn stages(h: Option<&Hooks>) -> Vec<(&'static str, &[Hook])> {
    let Some(h) = h else { return Vec::new() };
    fn list(l: &Option<Vec<Hook>>) -> &[Hook] {
        l.as_deref().unwrap_or(&[])
    }
    #[allow(deprecated)]
    let prestart = list(h.prestart());
    vec![
        ("prestart", prestart),
        ("createRuntime", list(h.create_runtime())),
        ("createContainer", list(h.create_container())),
        ("startContainer", list(h.start_container())),
        ("poststart", list(h.poststart())),
        ("poststop", list(h.poststop())),
    ]
}

/// The hooks of `stage` as the launcher runs them.
pub fn commands(h: Option<&Hooks>, stage: &str) -> Vec<HookCommand> {
    stages(h)
        .into_iter()
        .filter(|(s, _)| *s == stage)
        .flat_map(|(s, list)| {
            list.iter().enumerate().map(move |(i, hook)| HookCommand {
                path: hook.path().clone(),
                args: hook.args().clone().unwrap_or_default(),
                env: hook.env().clone().unwrap_or_default(),
                timeout: hook
                    .timeout()
                    .and_then(|t| u64::try_from(t).ok())
                    .map(Duration::from_secs),
                name: format!("{s}[{i}]"),
            })
        })
        .collect()
}

/// The state a hook reads on its stdin.
pub fn state_json(report: &StateReport) -> Vec<u8> {
    serde_json::to_vec(report).unwrap_or_default()
}

/// What the launch runs: `prestart` and `createRuntime`, then `createContainer`, each
/// with the state (`creating`) of the container whose pid is not known yet.
pub fn for_launch(h: Option<&Hooks>, creating: &StateReport) -> LaunchHooks {
    let mut create_runtime = commands(h, "prestart");
    create_runtime.extend(commands(h, "createRuntime"));
    let mut probe = creating.clone();
    probe.pid = 0;
    let text = String::from_utf8_lossy(&state_json(&probe)).into_owned();
    // The id, version and status come before the pid and hold no `"pid":0`.
    let state = text.replacen("\"pid\":0", "\"pid\":{pid}", 1);
    LaunchHooks {
        state,
        create_runtime,
        create_container: commands(h, "createContainer"),
    }
}

/// Runs the hooks of `stage` (one after the process started: `poststart`,
/// `poststop`) in the runtime's namespaces; a failure is a warning, as runtime-spec
/// says.
pub fn run_warning(
    h: Option<&Hooks>,
    stage: &str,
    state: &StateReport,
    warn: &mut dyn FnMut(&str),
) {
    let state = state_json(state);
    for hook in commands(h, stage) {
        if let Err(e) = crate::launcher::hooks::run(&hook, &state) {
            warn(&e.to_string());
        }
    }
}
