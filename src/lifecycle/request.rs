//! A create request (`POST /containers`) checked field by field into a [`ContainerRecord`]:
//! the request's validation, with its limits.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::config::Config;
use crate::error::{bad, Result};
use crate::ids::valid_internal_id;
use crate::model::{now, ContainerRecord, InstallState, Limits, PortBinding, PowerState};
use crate::volumes;

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The longest startup command (a console command has its own limit, `power::MAX_COMMAND`).
const MAX_STARTUP_COMMAND: usize = 8 * 1024;

/// `POST /containers` body (the API form; `http::seed_form` turns the seed's form into one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub internal_id: String,
    pub image: String,
    pub volume_id: String,
    pub startup_command: String,
    #[serde(default)]
    pub start_pattern: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub mount: BTreeMap<String, String>,
    #[serde(default)]
    pub install_script: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub crash_restart: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_command: Option<String>,
    /// Run the image's own command when `startup_command` is empty (the seed form, which
    /// has no startup command); never read from a body.
    #[serde(skip)]
    pub image_command: bool,
}

/// Checks everything that needs no state and builds the record (`installing`, `offline`).
pub fn check_create(req: CreateRequest, config: &Config) -> Result<ContainerRecord> {
    if !valid_internal_id(&req.internal_id) {
        return Err(bad("internal_id must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with ."));
    }
    check_image(&req.image, &config.docker.allowed_registries)?;
    let volume_id = volumes::parse_key(&req.volume_id)?;
    let command = req.startup_command.trim();
    if (command.is_empty() && !req.image_command) || command.len() > MAX_STARTUP_COMMAND || command.contains('\0') {
        return Err(bad(format!("startup_command must be 1-{MAX_STARTUP_COMMAND} bytes without NUL")));
    }
    if let Some(p) = &req.start_pattern {
        check_pattern(p)?;
    }
    check_ports(&req.ports)?;
    check_limits(&req.limits)?;
    let defaults = &config.containers.default_limits;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let limits = Limits {
        memory: req.limits.memory.or(defaults.memory),
        cpu: req.limits.cpu.or(defaults.cpu.map(|c| c.min(cores))),
    };
    // Where the sources lead is judged off the runtime's threads (`mounts::resolve`).
    super::mounts::check_syntax(&req.mount)?;
    check_env(&req.env)?;
    if req.stop_command.as_deref().is_some_and(|c| c.len() > 256 || c.contains(['\0', '\n', '\r'])) {
        return Err(bad("stop_command must be one line of at most 256 bytes"));
    }
    let user = req.user.unwrap_or_else(|| config.containers.user.clone());
    if crate::model::parse_user(&user).is_none() {
        return Err(bad(format!("user {user:?} must be uid:gid like 1000:1000 (0:0 runs the server as root)")));
    }
    if req.install_script.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(bad("install_script must not contain NUL"));
    }
    let t = now();
    Ok(ContainerRecord {
        internal_id: req.internal_id,
        record_id: crate::ids::new_uuid()
            .map_err(|e| crate::error::Error::from(super::error::Failure::NoRandomness(e)))?,
        container_id: None,
        volume_id,
        image: req.image,
        startup_command: command.to_string(),
        start_pattern: req.start_pattern.filter(|p| !p.is_empty()),
        install_state: InstallState::Installing,
        state: PowerState::Offline,
        ports: req.ports,
        limits,
        mount: req.mount,
        env: req.env,
        install_script: req.install_script.filter(|s| !s.trim().is_empty()),
        crash_restart: req.crash_restart.unwrap_or(config.containers.crash_restart),
        stop_command: req.stop_command.filter(|c| !c.trim().is_empty()),
        user,
        last_exit: None,
        firewall: Vec::new(),
        error: None,
        created_at: t,
        updated_at: t,
    })
}

/// An image reference by Docker's grammar, `[registry[:port]/]path[:tag][@digest]`, from a
/// registry `allowed` lets images come from (empty: any). The error names the rule broken.
pub fn check_image(image: &str, allowed: &[String]) -> Result<()> {
    let registry = super::image::check(image).map_err(|rule| bad(format!("image {image:?}: {rule}")))?;
    if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&registry)) {
        return Err(bad(format!(
            "image {image:?} comes from registry {registry}, which docker.allowed_registries does not list"
        )));
    }
    Ok(())
}

/// Longest `start_pattern` accepted, in bytes.
pub const MAX_PATTERN: usize = 256;
/// Bound on a compiled `start_pattern`, so matching a line costs little whatever the pattern.
const PATTERN_SIZE_LIMIT: usize = 32 * 1024;

/// Compiles a `start_pattern` with the same limits everywhere it is compiled.
pub fn compile_pattern(p: &str) -> Result<regex_lite::Regex> {
    if p.len() > MAX_PATTERN {
        return Err(bad(format!("start_pattern must be at most {MAX_PATTERN} bytes")));
    }
    regex_lite::RegexBuilder::new(p)
        .size_limit(PATTERN_SIZE_LIMIT)
        .nest_limit(32)
        .build()
        .map_err(|e| bad(format!("start_pattern is not a valid regex (or is too complex): {e}")))
}

pub fn check_pattern(p: &str) -> Result<()> {
    compile_pattern(p).map(drop)
}

/// Ports: non-zero, no repeats in one request.
pub fn check_ports(ports: &[PortBinding]) -> Result<()> {
    let mut seen = HashSet::new();
    for p in ports {
        if p.port == 0 {
            return Err(bad("port must be between 1 and 65535"));
        }
        if !seen.insert(p.key()) {
            return Err(bad(format!("port {} is listed twice", p.key())));
        }
    }
    Ok(())
}

fn check_limits(l: &Limits) -> Result<()> {
    if let Some(m) = l.memory {
        if m < MIN_MEMORY {
            return Err(bad(format!("limits.memory must be at least {MIN_MEMORY} bytes (6 MiB)")));
        }
    }
    if let Some(c) = l.cpu {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if !(c.is_finite() && c >= 0.01 && c <= cores) {
            return Err(bad(format!("limits.cpu must be between 0.01 and {cores} (cores on this host)")));
        }
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in env {
        let key_ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(bad(format!("env name {k:?} must be letters, digits and _ (not starting with a digit)")));
        }
        if v.contains('\0') {
            return Err(bad(format!("env {k} must not contain NUL")));
        }
    }
    Ok(())
}
