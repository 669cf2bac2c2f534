//! The network lightd puts servers on: its options, and a warning when an existing one lets
//! servers reach each other.

use serde_json::{json, Value};

/// Options of the network lightd makes: servers reach each other only through published ports.
pub fn network_options() -> Value {
    json!({"com.docker.network.bridge.enable_icc": "false"})
}

/// Says so at start when the network already existed with traffic between containers on
/// (lightd cannot change an existing network's options).
pub async fn warn_if_open(docker: &crate::docker::Docker, name: &str, id: &str) {
    if let Ok(net) = docker.json(hyper::Method::GET, &format!("/networks/{id}"), None).await {
        if net["Options"]["com.docker.network.bridge.enable_icc"].as_str() != Some("false") {
            crate::warn!(
                "network {name} lets servers reach each other's unpublished ports; \
                 remove it (docker network rm {name}) so lightd makes it with inter-container traffic off"
            );
        }
    }
}
