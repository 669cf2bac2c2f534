//! `/containers` handlers: parse, hand to `lifecycle`, shape the answer.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::handles::Handles;
use super::reply::{json, json_bytes, message, ApiError, Reply};
use super::request::Ctx;
use super::seed_form::{self, Form, Seed};
use crate::error::Error;
use crate::lifecycle::{self, request, request::CreateRequest, Action};
use crate::model::{ContainerRecord, InstallState, PortBinding, PowerState};
use crate::volumes;
use hyper::body::Bytes;

/// The record as `GET /containers/:id` shows it.
#[derive(Serialize)]
struct View<'a> {
    #[serde(flatten)]
    record: &'a ContainerRecord,
    /// Lifecycle events of the latest install, in order.
    install_events: Vec<&'static str>,
}

fn accepted(msg: &str, id: &str) -> Reply {
    json(StatusCode::ACCEPTED, &json!({ "message": msg, "internal_id": id }))
}

/// `POST /containers`, in the API form or the seed's (see `seed_form`).
pub async fn create(app: &std::sync::Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: Value = ctx.json().await?;
    let (req, made) = match seed_form::parse(body)? {
        Form::Api(req) => (req, None),
        Form::Seed(seed) => seed_request(app, seed).await?,
    };
    let id = req.internal_id.clone();
    if let Err(e) = lifecycle::create(app.sups(), req).await {
        if let Some(volume) = made {
            if let Err(why) = volumes::delete(app.volumes(), app.backups(), &volume).await {
                crate::warn!("create of {id} failed; its new volume {volume} could not be removed: {why}");
            }
        }
        return Err(e.into());
    }
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"message": "Container creation started", "internal_id": id, "state": "installing"}),
    ))
}

/// A seed-form create made whole: its host ports found in the pool, and its volume, the one
/// named like the server when no server uses it, else a new one of that name (returned, so a
/// failed create removes it). Everything checkable is checked before a volume is made.
async fn seed_request(app: &Handles, seed: Seed) -> Result<(CreateRequest, Option<String>), Error> {
    let Seed { mut request, ports } = seed;
    let name = request.internal_id.clone();
    let volume = app.store().read(|s| {
        if s.containers.contains_key(&name) {
            return Err(Error::Conflict(format!("Container {name} already exists")));
        }
        request.ports = seed_form::resolve_ports(&ports, s.ports.values())?;
        Ok(volumes::resolve(s, &name).map(|id| (volumes::used_by(s, &id), id)))
    })?;
    request::check_create(request.clone(), app.config())?;
    match volume {
        Some((users, _)) if !users.is_empty() => Err(Error::Conflict(format!(
            "Volume {name} is used by {}: the seed form gives a server the volume of its name; pick another name",
            users.join(", ")
        ))),
        Some((_, id)) => {
            request.volume_id = id;
            Ok((request, None))
        }
        None => {
            let v = volumes::create(app.volumes(), None, Some(name)).await?;
            request.volume_id = v.volume_id.clone();
            Ok((request, Some(v.volume_id)))
        }
    }
}

/// One entry of `GET /containers`.
#[derive(Serialize)]
struct Summary<'a> {
    internal_id: &'a str,
    container_id: &'a Option<String>,
    install_state: InstallState,
    state: PowerState,
    image: &'a str,
}

/// `GET /containers`: serialized once per state version and shared until the next change,
/// so a panel polling the list costs a copy of bytes, not a walk over every record.
pub fn list(app: &Handles) -> Reply {
    let version = app.store().version();
    let cached = app.list_cache().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = match cached {
        Some((v, bytes)) if v == version => bytes,
        _ => {
            let (v, bytes) = app.store().read_versioned(|s| {
                let items: Vec<Summary> = s
                    .containers
                    .values()
                    .map(|c| Summary {
                        internal_id: &c.internal_id,
                        container_id: &c.container_id,
                        install_state: c.install_state,
                        state: c.state,
                        image: &c.image,
                    })
                    .collect();
                Bytes::from(serde_json::to_vec(&json!({ "containers": items })).unwrap_or_default())
            });
            *app.list_cache().lock().unwrap_or_else(|p| p.into_inner()) = Some((v, bytes.clone()));
            bytes
        }
    };
    json_bytes(StatusCode::OK, body)
}

/// `GET /containers/:id`: serialized once per (state version, install events) and kept until
/// either changes, like the list.
pub fn get(app: &Handles, id: &str) -> Result<Reply, ApiError> {
    // Each thread keeps its own copies, so a hit writes no memory another core reads.
    let changes = crate::console::install_changes();
    let version = app.store().version();
    let hit = VIEWS.with(|v| v.borrow().get(id).filter(|e| (e.0, e.1) == (version, changes)).map(|e| e.2.clone()));
    if let Some(bytes) = hit {
        return Ok(json_bytes(StatusCode::OK, bytes));
    }
    let (version, record) = app.store().read_versioned(|s| s.containers.get(id).cloned());
    let record = match record {
        Some(r) => r,
        None => return Err(lifecycle::record(app.sups(), id).err().unwrap_or_else(lifecycle::not_found).into()),
    };
    let install_events = app.hubs().peek(id).map(|h| h.news().install_events()).unwrap_or_default();
    let bytes = Bytes::from(serde_json::to_vec(&View { record: &record, install_events }).unwrap_or_default());
    VIEWS.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() > 4 * app.config().containers.max_containers {
            v.clear();
        }
        v.insert(id.to_string(), (version, changes, bytes.clone()));
    });
    Ok(json_bytes(StatusCode::OK, bytes))
}

thread_local! {
    /// `GET /containers/:id` answers by id, as serialized at (state version, install changes).
    static VIEWS: std::cell::RefCell<std::collections::HashMap<String, (u64, u64, Bytes)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

pub async fn delete(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    lifecycle::act(app.sups(), ctx.param(0), Action::Delete).await?;
    Ok(message(StatusCode::OK, "Container deleted successfully"))
}

/// `POST /containers/:id/reinstall` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReinstallBody {
    image: Option<String>,
    install_script: Option<String>,
}

pub async fn reinstall(app: &std::sync::Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: Option<ReinstallBody> = ctx.json_opt().await?;
    let (image, script) = body.map_or((None, None), |b| (b.image, b.install_script));
    // As at create: the script becomes a file the install runs; a NUL would cut it short.
    if script.as_deref().is_some_and(|s| s.contains('\0')) {
        return Err(ApiError::bad_request("install_script must not contain NUL"));
    }
    let id = ctx.param(0).to_string();
    lifecycle::act(app.sups(), &id, Action::Reinstall { image, install_script: script }).await?;
    Ok(accepted("Container reinstall started", &id))
}

/// `POST /containers/:id/rebind` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebindBody {
    ports: Vec<PortBinding>,
}

pub async fn rebind(app: &std::sync::Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: RebindBody = ctx.json().await?;
    seed_form::refuse_container_ports(&body.ports)?;
    let id = ctx.param(0).to_string();
    lifecycle::act(app.sups(), &id, Action::Rebind(body.ports)).await?;
    Ok(accepted("Network rebinding started", &id))
}
