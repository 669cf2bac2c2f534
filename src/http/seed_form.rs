//! The seed's own create body (seed 000's README), accepted beside the API form:
//! `{"image", "name", "ports": {"<container port>": "<host port>"}, "env": {..}}`.
//! `name` becomes the `internal_id` (and names the volume made for the server), each host
//! port is taken from the pool and published to its container port, and without a
//! `startup_command` the server runs its image's own command.
//!
//! A body is in the seed form when it has `name` or a map of `ports`; anything of the other
//! form mixed in is a `400` naming the field. Everything here is pure: the handler
//! (`http::containers::create`) finds the ports in the state and makes the volume.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{bad, conflict, Result};
use crate::lifecycle::request::CreateRequest;
use crate::model::{Port, PortBinding, Protocol};

/// A create body, in the form it came in.
#[derive(Debug)]
pub enum Form {
    Api(CreateRequest),
    Seed(Seed),
}

/// A create in the seed form, translated but for what needs the state: its host ports (found
/// in the pool by [`resolve_ports`]) and its volume (`request.volume_id` is the name until the
/// handler puts the id of the volume it found or made).
#[derive(Debug)]
pub struct Seed {
    pub request: CreateRequest,
    pub ports: Vec<SeedPort>,
}

/// One `"<container port>[/udp]": "[<ip>:]<host port>"` entry of the seed form's `ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPort {
    pub container: u16,
    pub protocol: Protocol,
    /// The pool entry's address, when the value names one.
    pub host_ip: Option<IpAddr>,
    pub host: u16,
}

/// The fields the seed form takes: its own four and the API form's optional ones.
const FIELDS: [&str; 12] = [
    "name",
    "image",
    "ports",
    "env",
    "startup_command",
    "start_pattern",
    "limits",
    "mount",
    "install_script",
    "crash_restart",
    "user",
    "stop_command",
];

/// Tells the two forms apart and reads the body as the one it is in.
pub fn parse(body: Value) -> Result<Form> {
    let Value::Object(obj) = body else {
        return Err(bad("request body must be a JSON object"));
    };
    if !obj.contains_key("name") && !obj.get("ports").is_some_and(Value::is_object) {
        let req: CreateRequest =
            serde_json::from_value(Value::Object(obj)).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
        refuse_container_ports(&req.ports)?;
        return Ok(Form::Api(req));
    }
    seed(obj).map(Form::Seed)
}

/// The API form's bindings publish to the same port number inside: `container_port` is the
/// seed form's alone (kept in the record), never read from an API body.
pub fn refuse_container_ports(ports: &[PortBinding]) -> Result<()> {
    if ports.iter().any(|p| p.container_port.is_some()) {
        return Err(bad(
            "invalid JSON body: unknown field `container_port` in ports, expected `ip`, `port` or `protocol` \
             (a port is published to the same number inside; the seed form {\"ports\": {\"80\": \"8080\"}} maps them)",
        ));
    }
    Ok(())
}

fn seed(mut obj: Map<String, Value>) -> Result<Seed> {
    let named = obj.contains_key("name");
    if obj.contains_key("internal_id") {
        return Err(bad(if named {
            "name and internal_id cannot both be given: name names the server in the seed form \
             ({\"image\", \"name\", \"ports\": {..}, \"env\": {..}}), internal_id in the API form"
        } else {
            "ports is a map {\"<container port>\": \"<host port>\"}, the seed form, which names the server with \
             name, not internal_id: use name, or give ports as a list of {\"ip\", \"port\", \"protocol\"}"
        }));
    }
    if obj.contains_key("volume_id") {
        return Err(bad("volume_id is not part of the seed form (name): it makes the server a volume named like it \
             (or uses the unused volume of that name); to pick a volume, use the API form (internal_id, volume_id)"));
    }
    if obj.get("ports").is_some_and(|p| !p.is_object() && !p.is_null()) {
        return Err(bad(
            "ports must be a map {\"<container port>\": \"<host port>\"} in the seed form (name); a list \
             of {\"ip\", \"port\", \"protocol\"} belongs to the API form (internal_id, volume_id)",
        ));
    }
    if let Some(field) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("unknown field `{field}` in the seed form, which takes {}", FIELDS.join(", "))));
    }
    let name: String = take(&mut obj, "name")?.ok_or_else(|| bad("name is required in the seed form"))?;
    if !crate::volumes::valid_name(&name) {
        return Err(bad(format!(
            "name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ . -, not start with . and not be shaped like \
             a UUID (it names the server and its volume)"
        )));
    }
    let image: String = take(&mut obj, "image")?.ok_or_else(|| bad("image is required"))?;
    let ports: BTreeMap<String, Value> = take(&mut obj, "ports")?.unwrap_or_default();
    let mut ports = ports.iter().map(|(k, v)| seed_port(k, v)).collect::<Result<Vec<_>>>()?;
    // A JSON object has no order: the lowest container port comes first (`SERVER_PORT`).
    ports.sort_by_key(|p| (p.container, p.protocol, p.host));
    let startup_command: Option<String> = take(&mut obj, "startup_command")?;
    let request = CreateRequest {
        internal_id: name.clone(),
        image,
        volume_id: name,
        image_command: startup_command.is_none(),
        startup_command: startup_command.unwrap_or_default(),
        start_pattern: take(&mut obj, "start_pattern")?,
        ports: Vec::new(),
        limits: take(&mut obj, "limits")?.unwrap_or_default(),
        mount: take(&mut obj, "mount")?.unwrap_or_default(),
        install_script: take(&mut obj, "install_script")?,
        env: take(&mut obj, "env")?.unwrap_or_default(),
        crash_restart: take(&mut obj, "crash_restart")?,
        user: take(&mut obj, "user")?,
        stop_command: take(&mut obj, "stop_command")?,
    };
    Ok(Seed { request, ports })
}

/// Field `field` of the body (`null` as absent), its error naming it.
fn take<T: DeserializeOwned>(obj: &mut Map<String, Value>, field: &str) -> Result<Option<T>> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| bad(format!("{field}: {e}"))),
    }
}

/// `"80"` / `"80/tcp"` / `"27015/udp"` -> `"8080"`, `8080` or `"127.0.0.1:8080"`.
fn seed_port(key: &str, value: &Value) -> Result<SeedPort> {
    let number = |s: &str| s.parse::<u16>().ok().filter(|n| *n > 0 && s.bytes().all(|b| b.is_ascii_digit()));
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let (Some(container), Some(protocol)) = (number(port), Protocol::parse(protocol)) else {
        return Err(bad(format!("ports: key {key:?} must be a container port (1-65535) like \"80\" or \"27015/udp\"")));
    };
    let host = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0).map(|n| (None, n)),
        Value::String(s) => match s.rsplit_once(':') {
            None => number(s).map(|n| (None, n)),
            Some((ip, port)) => {
                let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
                ip.parse::<IpAddr>().ok().zip(number(port)).map(|(ip, n)| (Some(ip), n))
            }
        },
        _ => None,
    };
    let (host_ip, host) = host.ok_or_else(|| {
        bad(format!(
            "ports: {key:?} maps to {value}, which must be a host port (1-65535) like \"8080\" or \"127.0.0.1:8080\""
        ))
    })?;
    Ok(SeedPort { container, protocol, host_ip, host })
}

/// The pool entries the seed ports take: the entry of that host port and protocol (on the
/// address given, else on any, a free one first). `400 Port not found in network pool` when
/// the pool has none, `409 Port already in use` when it is taken.
pub fn resolve_ports<'a>(ports: &[SeedPort], pool: impl Iterator<Item = &'a Port> + Clone) -> Result<Vec<PortBinding>> {
    let mut out = Vec::with_capacity(ports.len());
    for p in ports {
        let fits: Vec<&Port> = pool
            .clone()
            .filter(|e| e.port == p.host && e.protocol == p.protocol && p.host_ip.is_none_or(|ip| ip == e.ip))
            .collect();
        let wanted = match p.host_ip {
            Some(ip) => format!("{ip}:{}/{}", p.host, p.protocol.as_str()),
            None => format!("host port {}/{}", p.host, p.protocol.as_str()),
        };
        let Some(entry) = fits.iter().find(|e| !e.in_use).or(fits.first()) else {
            return Err(bad(format!(
                "Port not found in network pool: {wanted} (for container port {}; add it with POST /network/ports)",
                p.container
            )));
        };
        if entry.in_use {
            return Err(conflict(format!(
                "Port already in use: {} by {}",
                entry.key(),
                entry.used_by.as_deref().unwrap_or("another container")
            )));
        }
        let inner = Some(p.container).filter(|c| *c != entry.port);
        out.push(PortBinding { ip: entry.ip, port: entry.port, protocol: entry.protocol, container_port: inner });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortKey;
    use serde_json::json;

    fn seed_of(body: Value) -> Seed {
        match parse(body).unwrap() {
            Form::Seed(s) => s,
            Form::Api(r) => panic!("read as the API form: {r:?}"),
        }
    }

    fn error(body: Value) -> String {
        parse(body).map(|f| format!("accepted: {f:?}")).unwrap_or_else(|e| e.to_string())
    }

    fn pool(entries: &[(&str, u16, bool)]) -> Vec<Port> {
        entries
            .iter()
            .map(|(ip, port, used)| Port {
                used_by: used.then(|| "other".to_string()),
                in_use: *used,
                ..Port::free(PortKey { ip: ip.parse().unwrap(), port: *port, protocol: Protocol::Tcp })
            })
            .collect()
    }

    #[test]
    fn the_seed_readme_body_maps_onto_a_create_request() {
        let s = seed_of(json!({
            "image": "nginx:latest", "name": "my-nginx", "ports": {"80": "8080"}, "env": {"ENV": "production"}
        }));
        let r = &s.request;
        assert_eq!(
            (r.internal_id.as_str(), r.volume_id.as_str(), r.image.as_str()),
            ("my-nginx", "my-nginx", "nginx:latest")
        );
        assert_eq!((r.startup_command.as_str(), r.image_command), ("", true), "the image's own command");
        assert_eq!(r.env, BTreeMap::from([("ENV".to_string(), "production".to_string())]));
        assert!(r.ports.is_empty(), "host ports come from the pool");
        assert_eq!(s.ports, vec![SeedPort { container: 80, protocol: Protocol::Tcp, host_ip: None, host: 8080 }]);
    }

    #[test]
    fn optional_fields_and_port_spellings() {
        let s = seed_of(json!({
            "name": "srv", "image": "i", "startup_command": "echo hi", "start_pattern": "hi", "crash_restart": false,
            "limits": {"memory": 67108864}, "user": "0:0", "stop_command": "quit", "install_script": "true",
            "ports": {"80/tcp": 8080, "27015/udp": "127.0.0.1:27015", "443": "[::1]:8443"}
        }));
        let r = &s.request;
        assert_eq!((r.startup_command.as_str(), r.image_command), ("echo hi", false));
        assert_eq!(
            (r.start_pattern.as_deref(), r.crash_restart, r.user.as_deref()),
            (Some("hi"), Some(false), Some("0:0"))
        );
        assert_eq!(r.limits.memory, Some(67108864));
        let udp =
            SeedPort { container: 27015, protocol: Protocol::Udp, host_ip: "127.0.0.1".parse().ok(), host: 27015 };
        assert!(s.ports.contains(&udp), "{:?}", s.ports);
        assert!(s.ports.contains(&SeedPort { container: 80, protocol: Protocol::Tcp, host_ip: None, host: 8080 }));
        assert!(s.ports.contains(&SeedPort {
            container: 443,
            protocol: Protocol::Tcp,
            host_ip: "::1".parse().ok(),
            host: 8443
        }));
        let order: Vec<u16> = s.ports.iter().map(|p| p.container).collect();
        assert_eq!(order, [80, 443, 27015], "by container port, not as the keys sort");
        assert!(seed_of(json!({"name": "a", "image": "i", "ports": null, "env": null})).ports.is_empty());
        // A map of ports alone makes it the seed form: then name is missing.
        assert_eq!(error(json!({"image": "i", "ports": {}})), "name is required in the seed form");
    }

    #[test]
    fn the_api_form_is_read_as_before() {
        let body = json!({"internal_id": "a", "image": "i", "volume_id": "v", "startup_command": "x",
                          "ports": [{"ip": "0.0.0.0", "port": 25565}], "env": {"K": "V"}});
        let Form::Api(r) = parse(body).unwrap() else { panic!("not the API form") };
        assert_eq!((r.internal_id.as_str(), r.ports.len(), r.image_command), ("a", 1, false));
        assert!(error(json!({"internal_id": "a", "image": "i", "volume_id": "v"}))
            .contains("missing field `startup_command`"));
        let e = error(json!({"internal_id": "a", "image": "i", "volume_id": "v", "startup_command": "x",
                             "ports": [{"ip": "0.0.0.0", "port": 1, "container_port": 2}]}));
        assert!(e.contains("unknown field `container_port`"), "{e}");
        assert_eq!(error(json!([1])), "request body must be a JSON object");
    }

    #[test]
    fn mixtures_and_bad_values_name_the_field() {
        let cases = [
            (json!({"name": "a", "internal_id": "a", "image": "i"}), "name and internal_id"),
            (json!({"internal_id": "a", "image": "i", "ports": {"80": "8080"}}), "use name"),
            (json!({"name": "a", "image": "i", "volume_id": "v"}), "volume_id is not part of the seed form"),
            (json!({"name": "a", "image": "i", "ports": [{"ip": "0.0.0.0", "port": 1}]}), "ports must be a map"),
            (json!({"name": "a", "image": "i", "colour": "red"}), "unknown field `colour`"),
            (json!({"name": "a"}), "image is required"),
            (json!({"name": ".a", "image": "i"}), "name \".a\" must be"),
            (json!({"name": "d6764075-c5f1-4045-9fb3-85315b85cb0f", "image": "i"}), "shaped like a UUID"),
            (json!({"name": 7, "image": "i"}), "name: invalid type"),
            (json!({"name": "a", "image": "i", "env": ["K=V"]}), "env: invalid type"),
            (json!({"name": "a", "image": "i", "env": {"K": 1}}), "env: invalid type"),
            (json!({"name": "a", "image": "i", "ports": {"http": "8080"}}), "key \"http\" must be a container port"),
            (json!({"name": "a", "image": "i", "ports": {"80/sctp": "8080"}}), "key \"80/sctp\""),
            (json!({"name": "a", "image": "i", "ports": {"0": "8080"}}), "key \"0\""),
            (json!({"name": "a", "image": "i", "ports": {"80": "70000"}}), "maps to \"70000\""),
            (json!({"name": "a", "image": "i", "ports": {"80": 0}}), "maps to 0"),
            (json!({"name": "a", "image": "i", "ports": {"80": "+8080"}}), "maps to \"+8080\""),
            (json!({"name": "a", "image": "i", "ports": {"80": "host:8080"}}), "maps to \"host:8080\""),
            (json!({"name": "a", "image": "i", "ports": {"80": true}}), "maps to true"),
            (json!({"name": "a", "image": "i", "limits": [1]}), "limits:"),
        ];
        for (body, needle) in cases {
            let e = error(body.clone());
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn host_ports_come_from_the_pool() {
        let p = |container, host_ip: Option<&str>, host| SeedPort {
            container,
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|i| i.parse().unwrap()),
            host,
        };
        let entries = pool(&[("0.0.0.0", 8080, false), ("127.0.0.1", 8080, false), ("0.0.0.0", 9000, true)]);
        let b = resolve_ports(&[p(80, None, 8080)], entries.iter()).unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!([{"ip": "0.0.0.0", "port": 8080, "protocol": "tcp", "container_port": 80}])
        );
        let b = resolve_ports(&[p(80, Some("127.0.0.1"), 8080)], entries.iter()).unwrap();
        assert_eq!((b[0].ip.to_string(), b[0].inner_port()), ("127.0.0.1".to_string(), 80));
        let same = resolve_ports(&[p(8080, None, 8080)], entries.iter()).unwrap();
        assert_eq!(same[0].container_port, None, "the same number inside needs no mapping");
        // A free entry is preferred over a taken one of the same port.
        let mixed = pool(&[("0.0.0.0", 8080, true), ("10.0.0.1", 8080, false)]);
        assert_eq!(resolve_ports(&[p(80, None, 8080)], mixed.iter()).unwrap()[0].ip.to_string(), "10.0.0.1");

        let missing = resolve_ports(&[p(80, None, 8081)], entries.iter()).unwrap_err();
        assert!(matches!(missing, crate::error::Error::BadRequest(_)));
        assert!(missing.to_string().starts_with("Port not found in network pool: host port 8081/tcp"), "{missing}");
        let udp = SeedPort { protocol: Protocol::Udp, ..p(80, None, 8080) };
        assert!(resolve_ports(&[udp], entries.iter()).unwrap_err().to_string().contains("8080/udp"));
        let wrong_ip = resolve_ports(&[p(80, Some("10.9.9.9"), 8080)], entries.iter()).unwrap_err();
        assert!(wrong_ip.to_string().contains("10.9.9.9:8080/tcp"), "{wrong_ip}");
        let taken = resolve_ports(&[p(80, None, 9000)], entries.iter()).unwrap_err();
        assert!(matches!(taken, crate::error::Error::Conflict(_)));
        assert_eq!(taken.to_string(), "Port already in use: 0.0.0.0:9000/tcp by other");
    }
}
