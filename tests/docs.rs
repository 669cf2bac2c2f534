//! The repository's docs stand alone and cannot drift: `docs/api.md` is generated from
//! `openapi.json` (this test fails when it differs; `LIGHTD_BLESS=1` rewrites it), every route
//! in `openapi.json` has its section there, and every link in README.md and `docs/` resolves to
//! a file (and heading) inside the repository.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn spec() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("openapi.json")).unwrap()).unwrap()
}

/// Follows a local `$ref` (`#/components/...`) until a value that is not one.
fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let ptr = r.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {r}"));
        v = spec.pointer(ptr).unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// A schema's type in a few words: `string`, `integer | null`, `[Port]`, `Backup`.
fn type_of(spec: &Value, s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(c) = s.get("const") {
        return format!("`{c}`");
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(" \\| ");
    }
    for k in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(k).and_then(Value::as_array) {
            return alts.iter().map(|a| type_of(spec, a)).collect::<Vec<_>>().join(" \\| ");
        }
    }
    let one = |t: &str| match t {
        "array" => format!("[{}]", s.get("items").map(|i| type_of(spec, i)).unwrap_or_else(|| "any".into())),
        "object" if s.get("additionalProperties").is_some_and(Value::is_object) => {
            format!("{{string: {}}}", type_of(spec, &s["additionalProperties"]))
        }
        t => t.to_string(),
    };
    match s.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(one).collect::<Vec<_>>().join(" \\| "),
        _ => "any".into(),
    }
}

/// One line of text for a table cell.
fn cell(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

/// The fields table of an object schema (after refs; `oneOf` forms each get their own).
fn fields(spec: &Value, schema: &Value, out: &mut String, named: &mut BTreeSet<String>) {
    let s = resolve(spec, schema);
    if let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
        named.insert(name.to_string());
    }
    if let Some(d) = s.get("description").and_then(Value::as_str) {
        writeln!(out, "{}\n", d.trim()).unwrap();
    }
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        for k in ["oneOf", "anyOf"] {
            for (i, alt) in s.get(k).and_then(Value::as_array).into_iter().flatten().enumerate() {
                writeln!(out, "Form {} ({}):\n", i + 1, type_of(spec, alt)).unwrap();
                fields(spec, alt, out, named);
            }
        }
        if s.get("properties").is_none() && s.get("oneOf").is_none() && s.get("anyOf").is_none() {
            writeln!(out, "Type: {}\n", type_of(spec, s)).unwrap();
        }
        return;
    };
    let required: BTreeSet<&str> =
        s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
    for (name, p) in props {
        let mut desc = p.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(d) = p.get("default") {
            desc = format!("{desc} (default `{d}`)").trim().to_string();
        }
        let req = if required.contains(name.as_str()) { "yes" } else { "" };
        writeln!(out, "| `{name}` | {} | {req} | {} |", type_of(spec, p), cell(&desc)).unwrap();
    }
    out.push('\n');
    for k in ["oneOf", "anyOf"] {
        let alts: Vec<String> =
            s.get(k).and_then(Value::as_array).into_iter().flatten().map(|a| rule(spec, a)).collect();
        if !alts.is_empty() {
            writeln!(
                out,
                "{} of these holds: {}.\n",
                if k == "oneOf" { "Exactly one" } else { "At least one" },
                alts.join("; or ")
            )
            .unwrap();
        }
    }
}

/// An alternative of a `oneOf` in words: the fields it requires and the types it narrows.
fn rule(spec: &Value, alt: &Value) -> String {
    let alt = resolve(spec, alt);
    let mut parts: Vec<String> = alt
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|f| format!("`{f}` given"))
        .collect();
    for (name, p) in alt.get("properties").and_then(Value::as_object).into_iter().flatten() {
        parts.push(format!("`{name}` is {}", type_of(spec, p)));
    }
    parts.join(", ")
}

/// `docs/api.md` as `openapi.json` describes the API.
fn api_reference(spec: &Value) -> String {
    let mut out = String::new();
    out.push_str("# API reference\n\n");
    out.push_str(
        "Generated from [`openapi.json`](../openapi.json) by `tests/docs.rs` (`LIGHTD_BLESS=1 cargo test --test docs` \
         rewrites it; the test fails when the two differ). The daemon serves the same description at \
         `GET /openapi.json`.\n\n",
    );
    out.push_str(spec["info"]["description"].as_str().unwrap_or("").trim());
    out.push_str("\n\n");
    let tags: Vec<&str> = spec["tags"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    out.push_str("Sections: ");
    out.push_str(&tags.iter().map(|t| format!("[{t}](#{t})")).collect::<Vec<_>>().join(", "));
    out.push_str(", [schemas](#schemas).\n\n");
    let mut named = BTreeSet::new();
    for tag in &tags {
        writeln!(out, "## {tag}\n").unwrap();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                if method == "parameters" || !op["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag)) {
                    continue;
                }
                let summary = op["summary"].as_str().unwrap_or("");
                writeln!(out, "### `{} {path}`\n\n{summary}.\n", method.to_uppercase()).unwrap();
                if op.get("security").and_then(Value::as_array).is_some_and(|s| s.is_empty()) {
                    out.push_str("Public: no token needed.\n\n");
                }
                if let Some(d) = op.get("description").and_then(Value::as_str) {
                    writeln!(out, "{}\n", d.trim()).unwrap();
                }
                let params: Vec<&Value> = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| resolve(spec, p))
                    .collect();
                if !params.is_empty() {
                    out.push_str("| parameter | in | type | required | description |\n|---|---|---|---|---|\n");
                    for p in params {
                        let desc = p.get("description").and_then(Value::as_str).unwrap_or("");
                        let req = if p["required"] == Value::Bool(true) { "yes" } else { "" };
                        let ty = p.get("schema").map(|s| type_of(spec, s)).unwrap_or_default();
                        writeln!(
                            out,
                            "| `{}` | {} | {ty} | {req} | {} |",
                            p["name"].as_str().unwrap(),
                            p["in"].as_str().unwrap(),
                            cell(desc)
                        )
                        .unwrap();
                    }
                    out.push('\n');
                }
                if let Some(body) = op.get("requestBody").map(|b| resolve(spec, b)) {
                    let required = if body["required"] == Value::Bool(true) { "required" } else { "optional" };
                    for (ctype, media) in body["content"].as_object().into_iter().flatten() {
                        writeln!(out, "Body ({required}, `{ctype}`):\n").unwrap();
                        match media.get("schema") {
                            Some(s) if ctype.contains("json") => fields(spec, s, &mut out, &mut named),
                            Some(s) => writeln!(out, "Type: {}\n", type_of(spec, s)).unwrap(),
                            None => {}
                        }
                    }
                }
                out.push_str("| status | meaning | body |\n|---|---|---|\n");
                for (code, r) in op["responses"].as_object().unwrap() {
                    let r = resolve(spec, r);
                    let desc = r.get("description").and_then(Value::as_str).unwrap_or("");
                    let body: Vec<String> = r
                        .get("content")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(ctype, m)| match m.get("schema") {
                            Some(s) => {
                                if let Some(n) =
                                    s.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next())
                                {
                                    named.insert(n.to_string());
                                }
                                format!("`{ctype}` {}", type_of(spec, s))
                            }
                            None => format!("`{ctype}`"),
                        })
                        .collect();
                    writeln!(out, "| {code} | {} | {} |", cell(desc), body.join(", ")).unwrap();
                }
                out.push('\n');
            }
        }
    }
    out.push_str("## Schemas\n\nThe shapes named above, as `openapi.json` defines them.\n\n");
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    for (name, s) in schemas {
        writeln!(out, "### {name}\n").unwrap();
        let mut ignore = BTreeSet::new();
        fields(spec, s, &mut out, &mut ignore);
    }
    out
}

#[test]
fn the_api_reference_is_generated_from_openapi_json() {
    let spec = spec();
    let want = api_reference(&spec);
    let path = root().join("docs/api.md");
    if std::env::var_os("LIGHTD_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/api.md differs from what openapi.json says: run `LIGHTD_BLESS=1 cargo test --test docs` and commit it"
    );
    // Every operation has its heading (a check of the generator itself).
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let heading = format!("### `{} {path}`", method.to_uppercase());
            assert!(have.contains(&heading), "docs/api.md lacks {heading}");
        }
    }
}

/// The markdown files whose links must stay inside the repository.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The targets of `[text](target)` links outside code (fenced blocks and inline code spans).
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code spans.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
        for auto in plain.split('<').skip(1) {
            if let Some(end) = auto.find('>') {
                let t = &auto[..end];
                if t.contains("://") || t.starts_with("mailto:") {
                    found.push(t.to_string());
                }
            }
        }
    }
    found
}

/// GitHub-style anchors of a markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        out.insert(slug);
    }
    out
}

#[test]
fn every_link_in_the_docs_resolves_inside_the_repository() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for link in links(&text) {
            let (target, anchor) = match link.split_once('#') {
                Some((t, a)) => (t, Some(a)),
                None => (link.as_str(), None),
            };
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            if target.contains(':') {
                broken.push(format!("{name}: {link} leaves the repository"));
                continue;
            }
            let path = if target.is_empty() { file.clone() } else { dir.join(target) };
            let inside = path.canonicalize().ok().filter(|p| p.starts_with(root().canonicalize().unwrap()));
            let Some(path) = inside else {
                broken.push(format!("{name}: {link} is no file in the repository"));
                continue;
            };
            if let Some(a) = anchor {
                let is_md = path.extension().is_some_and(|x| x == "md");
                if is_md && !anchors(&std::fs::read_to_string(&path).unwrap()).contains(a) {
                    broken.push(format!("{name}: {link} names no heading of {}", Path::new(target).display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_sees_what_it_should() {
    let text = "[a](docs/x.md) `[b](no)` <https://example.org>\n```\n[c](in-code)\n```\n[d](#top)";
    assert_eq!(links(text), ["docs/x.md", "https://example.org", "#top"]);
    assert!(anchors("# Top\n## The two commands\n### `GET /x`").contains("the-two-commands"));
    assert!(anchors("### `GET /health`").contains("get-health"));
}
