//! Seccomp profiles in the Docker/OCI JSON format (`defaultAction`, `syscalls[]` with
//! `names`, `action`, `errnoRet`, `args`, `includes`/`excludes` by capability and
//! architecture): the format operators already have files in. The built-in default is a
//! [`Profile`] too.

use serde::Deserialize;

/// A whole profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What a syscall no rule names gets (`SCMP_ACT_ERRNO` in Docker's default).
    pub default_action: String,
    /// errno for an `SCMP_ACT_ERRNO` default (EPERM when absent).
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// The rules, in file order.
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// One rule: these syscalls, under these argument conditions, get this action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Syscall names.
    #[serde(default)]
    pub names: Vec<String>,
    /// A single name (the older OCI form).
    #[serde(default)]
    pub name: Option<String>,
    /// Syscall numbers (the built-in profile names its syscalls by number: no name
    /// lookups at every start).
    #[serde(skip)]
    pub numbers: Vec<u32>,
    /// `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, `SCMP_ACT_KILL`, ...
    pub action: String,
    /// errno (or trace data) of the action.
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default)]
    pub args: Vec<Arg>,
    /// The rule applies only when all of these hold.
    #[serde(default)]
    pub includes: Filter,
    /// The rule does not apply when any of these holds.
    #[serde(default)]
    pub excludes: Filter,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Argument index, 0-5.
    pub index: u8,
    /// The value compared (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The second value (the expected masked value for `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `_NE`, `_LT`, `_LE`, `_GT`, `_GE`, `_MASKED_EQ`.
    pub op: String,
}

/// `includes` / `excludes` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities of the container (all for includes, any for excludes).
    #[serde(default)]
    pub caps: Vec<String>,
    /// Architectures (`amd64`, `arm64`, ...; any one matches).
    #[serde(default)]
    pub arches: Vec<String>,
    /// Oldest kernel (this launcher needs a newer one anyway: always met).
    #[serde(default)]
    pub min_kernel: Option<String>,
}

impl Rule {
    /// Every syscall name of the rule.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .chain(self.name.as_deref())
    }

    /// An allow rule for these syscall numbers (the built-in profile's building block).
    pub fn allow(numbers: &[i64]) -> Rule {
        Rule {
            numbers: numbers
                .iter()
                .filter_map(|n| u32::try_from(*n).ok())
                .collect(),
            action: "SCMP_ACT_ALLOW".into(),
            ..Rule::default()
        }
    }

    /// The rule applies only with all of `caps`.
    pub fn with_caps(mut self, caps: &[&str]) -> Rule {
        self.includes.caps = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The rule does not apply with any of `caps`.
    pub fn without_caps(mut self, caps: &[&str]) -> Rule {
        self.excludes.caps = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Adds an argument condition.
    pub fn arg(mut self, index: u8, op: &str, value: u64, value_two: u64) -> Rule {
        self.args.push(Arg {
            index,
            value,
            value_two,
            op: op.into(),
        });
        self
    }

    /// Whether the rule applies to a container holding `caps` on `arch`.
    pub fn applies(&self, caps: &[String], arch: &str) -> bool {
        let has = |c: &String| caps.iter().any(|h| h.eq_ignore_ascii_case(c));
        let arch_is = |a: &String| arch_matches(a, arch);
        let inc = &self.includes;
        let exc = &self.excludes;
        inc.caps.iter().all(has)
            && (inc.arches.is_empty() || inc.arches.iter().any(arch_is))
            && !exc.caps.iter().any(has)
            && !exc.arches.iter().any(arch_is)
    }
}

/// Docker's architecture names against Rust's (`amd64` and `SCMP_ARCH_X86_64` are
/// `x86_64`, ...).
fn arch_matches(name: &str, rust_arch: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.strip_prefix("scmp_arch_").unwrap_or(&n);
    match rust_arch {
        "x86_64" => matches!(n, "amd64" | "x86_64"),
        "aarch64" => matches!(n, "arm64" | "aarch64"),
        "riscv64" => n == "riscv64",
        other => n == other,
    }
}
