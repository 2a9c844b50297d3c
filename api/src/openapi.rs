//! The OpenAPI document as served at `/openapi.json`: poem-openapi's, plus what its derive cannot
//! say, so that the document states what validation enforces (clients are generated from it:
//! clients/typescript/).
//!
//! - `deny_unknown_fields` request bodies refuse unknown fields, yet poem-openapi leaves their
//!   schemas open: they get `additionalProperties: false`.
//! - Each `AnyJob_<Kind>` variant is `allOf: [{kind}, <Kind>]`; closing `<Kind>` would refuse
//!   `kind` itself, so the two merge into one closed object (the API refuses a field its kind
//!   does not have).
//! - Unsigned integers (`format: uint64`, …) get `minimum: 0`: generators and fuzzers ignore
//!   the format, the parser refuses a negative.
//! - A documented field of a tagged union type is `allOf: [{$ref}, {description}]`, which
//!   generators read as inheritance and drop the tag from (openapi-typescript: `Omit<AnyJob,
//!   "kind">`): it becomes a plain `$ref` with its description.
//! - Checks the handlers make (422) are stated too: `EnqueueRequest` takes `run_at` or
//!   `delay_ms`, not both; a product's images are http(s) URLs of at most 2048 characters, its
//!   price is above zero and its texts hold no NUL (`products::fields`).
//! - `POST /v1/products` takes `ProductInput` with `title`, `condition` and `price` required: the
//!   document names that `NewProduct`.
//! - `POST /api/plugin/tasks/{id}/result` reads its body by the caller's token (the reference
//!   runner's `ResultRequest`, the extension's `ExtResultRequest`), so poem-openapi sees a free
//!   JSON value: the document names the two shapes.

use indexmap::IndexMap;
use poem_openapi::types::Type;
use serde::{Deserialize, Serialize};

use crate::routes::{auth, jobs, plugin, products, settings};

/// Names of the request-body objects declared with `#[oai(deny_unknown_fields)]`.
fn closed_objects() -> Vec<String> {
    [
        auth::LoginRequest::name(),
        auth::RefreshRequest::name(),
        jobs::EnqueueRequest::name(),
        jobs::BatchRequest::name(),
        products::ProductInput::name(),
        products::PublishRequest::name(),
        settings::SettingsInput::name(),
        plugin::ConnectVinted::name(),
        plugin::SessionReport::name(),
        plugin::ResultRequest::name(),
        plugin::ExtResultRequest::name(),
        crate::dashboard::BulkRequest::name(),
    ]
    .into_iter()
    .map(|n| n.into_owned())
    .collect()
}

/// JSON that keeps the order poem-openapi wrote (serde_json's map sorts its keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum J {
    Obj(IndexMap<String, J>),
    Arr(Vec<J>),
    Scalar(serde_json::Value),
}

impl J {
    fn obj(&self) -> Option<&IndexMap<String, J>> {
        match self {
            J::Obj(m) => Some(m),
            _ => None,
        }
    }
    fn obj_mut(&mut self) -> Option<&mut IndexMap<String, J>> {
        match self {
            J::Obj(m) => Some(m),
            _ => None,
        }
    }
    fn get(&self, k: &str) -> Option<&J> {
        self.obj()?.get(k)
    }
}

/// poem-openapi's document (`spec`, JSON) with the additions above.
pub fn document(spec: &str) -> String {
    let mut doc: J = serde_json::from_str(spec).expect("poem-openapi writes valid JSON");
    plugin_result_body(&mut doc);
    let schemas = schemas_mut(&mut doc);
    for name in closed_objects() {
        schemas
            .get_mut(&name)
            .and_then(J::obj_mut)
            .unwrap_or_else(|| panic!("no object schema {name} in the document"))
            .insert("additionalProperties".into(), J::Scalar(false.into()));
    }
    let variants: Vec<String> = schemas
        .keys()
        .filter(|k| k.starts_with("AnyJob_"))
        .cloned()
        .collect();
    for v in variants {
        let merged = merge_variant(schemas, &schemas[&v]);
        schemas.insert(v, merged);
    }
    handler_checks(schemas);
    new_product(&mut doc);
    unsigned_minimum(&mut doc);
    let unions: Vec<String> = schemas_of(&doc)
        .iter()
        .filter(|(_, s)| s.get("discriminator").is_some())
        .map(|(n, _)| format!("#/components/schemas/{n}"))
        .collect();
    plain_union_refs(&mut doc, &unions);
    let mut out = serde_json::to_string_pretty(&doc).expect("serialize");
    out.push('\n');
    out
}

/// The plugin result body: one of its two shapes, their schemas (and those they name) added.
fn plugin_result_body(doc: &mut J) {
    let mut reg = poem_openapi::registry::Registry::new();
    plugin::ResultRequest::register(&mut reg);
    plugin::ExtResultRequest::register(&mut reg);
    let schemas = schemas_mut(doc);
    for (name, schema) in reg.schemas {
        if !schemas.contains_key(name.as_str()) {
            let json = serde_json::to_value(&schema).expect("a schema serializes");
            schemas.insert(name, serde_json::from_value(json).expect("JSON"));
        }
    }
    let one_of = |names: &[std::borrow::Cow<'static, str>]| {
        let refs = names
            .iter()
            .map(|n| {
                let mut m = IndexMap::new();
                m.insert(
                    "$ref".to_string(),
                    J::Scalar(format!("#/components/schemas/{n}").into()),
                );
                J::Obj(m)
            })
            .collect();
        let mut m = IndexMap::new();
        m.insert("oneOf".to_string(), J::Arr(refs));
        J::Obj(m)
    };
    set(
        doc,
        &[
            "paths",
            "/api/plugin/tasks/{id}/result",
            "post",
            "requestBody",
            "content",
            "application/json; charset=utf-8",
        ],
        "schema",
        one_of(&[
            plugin::ResultRequest::name(),
            plugin::ExtResultRequest::name(),
        ]),
    );
}

fn schemas_mut(doc: &mut J) -> &mut IndexMap<String, J> {
    doc.obj_mut()
        .and_then(|d| d.get_mut("components"))
        .and_then(J::obj_mut)
        .and_then(|c| c.get_mut("schemas"))
        .and_then(J::obj_mut)
        .expect("the document has component schemas")
}

fn schemas_of(doc: &J) -> &IndexMap<String, J> {
    doc.get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(J::obj)
        .expect("schemas")
}

fn set(schema: &mut J, path: &[&str], key: &str, value: J) {
    let mut at = schema;
    for p in path {
        at = at
            .obj_mut()
            .and_then(|m| m.get_mut(*p))
            .unwrap_or_else(|| panic!("no {p} in the document"));
    }
    at.obj_mut().expect("an object").insert(key.into(), value);
}

/// What the handlers check beyond poem-openapi's validators (they answer 422).
fn handler_checks(schemas: &mut IndexMap<String, J>) {
    let s = |v: &str| J::Scalar(v.into());
    let enqueue = schemas.get_mut("EnqueueRequest").expect("EnqueueRequest");
    let both = J::Arr(vec![s("run_at"), s("delay_ms")]);
    set(
        enqueue,
        &[],
        "not",
        J::Obj([("required".to_string(), both)].into()),
    );
    let product = schemas
        .get_mut(&products::ProductInput::name().into_owned())
        .expect("ProductInput");
    set(
        product,
        &["properties", "images", "items"],
        "pattern",
        s("^https?://"),
    );
    set(
        product,
        &["properties", "images", "items"],
        "maxLength",
        J::Scalar(2048.into()),
    );
    // The validator's `^[0-9]{1,9}(\.[0-9]{1,2})?$` with a digit other than 0 (without a
    // lookahead, which not every pattern engine has): the first one at each place, or cents.
    let whole = (0..9)
        .map(|zeros| format!("0{{{zeros}}}[1-9][0-9]{{0,{}}}", 8 - zeros))
        .collect::<Vec<_>>()
        .join("|");
    let price = format!(r"^((?:{whole})(\.[0-9]{{1,2}})?|0{{1,9}}\.(0[1-9]|[1-9][0-9]?))$");
    set(product, &["properties", "price"], "pattern", s(&price));
    for field in ["title", "description", "brand", "category", "size", "color"] {
        set(
            product,
            &["properties", field],
            "pattern",
            s(r"^[^\u0000]*$"),
        );
    }
}

/// `allOf: [{$ref: union}, {description}]` → `{$ref: union, description}`.
fn plain_union_refs(j: &mut J, unions: &[String]) {
    match j {
        J::Obj(m) => {
            let plain = match m.get("allOf") {
                Some(J::Arr(parts)) if parts.len() == 2 => match (&parts[0], &parts[1]) {
                    (J::Obj(r), J::Obj(d))
                        if r.len() == 1
                            && matches!(r.get("$ref"), Some(J::Scalar(serde_json::Value::String(t))) if unions.contains(t))
                            && d.keys().all(|k| k == "description") =>
                    {
                        Some((r["$ref"].clone(), d.get("description").cloned()))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some((r, d)) = plain {
                m.shift_remove("allOf");
                m.insert("$ref".into(), r);
                if let Some(d) = d {
                    m.insert("description".into(), d);
                }
            }
            m.values_mut().for_each(|v| plain_union_refs(v, unions));
        }
        J::Arr(a) => a.iter_mut().for_each(|v| plain_union_refs(v, unions)),
        J::Scalar(_) => {}
    }
}

/// `minimum: 0` on every unsigned integer schema that has no minimum.
fn unsigned_minimum(j: &mut J) {
    match j {
        J::Obj(m) => {
            let unsigned = matches!(m.get("type"), Some(J::Scalar(t)) if t == "integer")
                && matches!(m.get("format"), Some(J::Scalar(serde_json::Value::String(f))) if f.starts_with("uint"));
            if unsigned && !m.contains_key("minimum") {
                m.insert("minimum".into(), J::Scalar(0.into()));
            }
            m.values_mut().for_each(unsigned_minimum);
        }
        J::Arr(a) => a.iter_mut().for_each(unsigned_minimum),
        J::Scalar(_) => {}
    }
}

/// Adds `NewProduct` (ProductInput with the fields creation requires) and points the create
/// operation's body at it.
fn new_product(doc: &mut J) {
    let d = doc.obj_mut().expect("an object");
    let schemas = d["components"].obj_mut().expect("components")["schemas"]
        .obj_mut()
        .expect("schemas");
    let input = products::ProductInput::name().into_owned();
    let mut new = schemas[&input].obj().expect("ProductInput").clone();
    new.insert("title".into(), J::Scalar("NewProduct".into()));
    new.insert(
        "required".into(),
        J::Arr(
            products::CREATE_REQUIRED
                .iter()
                .map(|f| J::Scalar((*f).into()))
                .collect(),
        ),
    );
    schemas.insert("NewProduct".into(), J::Obj(new));
    let content = d["paths"].obj_mut().expect("paths")["/v1/products"]
        .obj_mut()
        .expect("path")["post"]
        .obj_mut()
        .expect("operation")["requestBody"]
        .obj_mut()
        .expect("body")["content"]
        .obj_mut()
        .expect("content");
    for (_, media) in content.iter_mut() {
        let schema = media.obj_mut().expect("media type")["schema"]
            .obj_mut()
            .expect("schema");
        schema.insert(
            "$ref".into(),
            J::Scalar("#/components/schemas/NewProduct".into()),
        );
    }
}

/// `allOf: [{kind}, {$ref: Kind}]` as one closed object.
fn merge_variant(schemas: &IndexMap<String, J>, variant: &J) -> J {
    let mut props = IndexMap::new();
    let mut required = vec![];
    let mut description = variant.get("description").cloned();
    let Some(J::Arr(parts)) = variant.get("allOf") else {
        panic!("a Union variant is an allOf: {variant:?}");
    };
    for part in parts {
        let part = match part.get("$ref") {
            Some(J::Scalar(serde_json::Value::String(r))) => {
                let s = &schemas[r.trim_start_matches("#/components/schemas/")];
                description = s.get("description").cloned().or(description);
                s
            }
            _ => part,
        };
        if let Some(p) = part.get("properties").and_then(J::obj) {
            props.extend(p.clone());
        }
        if let Some(J::Arr(r)) = part.get("required") {
            required.extend(r.iter().cloned());
        }
    }
    let mut out = IndexMap::new();
    out.insert("type".to_string(), J::Scalar("object".into()));
    if let Some(d) = description {
        out.insert("description".into(), d);
    }
    out.insert("required".into(), J::Arr(required));
    out.insert("properties".into(), J::Obj(props));
    out.insert("additionalProperties".into(), J::Scalar(false.into()));
    J::Obj(out)
}

#[cfg(test)]
mod tests {
    fn regex_lite(pattern: &serde_json::Value) -> regex::Regex {
        regex::Regex::new(pattern.as_str().expect("a pattern")).expect("a valid pattern")
    }

    #[test]
    fn closes_objects_merges_kind_variants_and_names_new_product_in_written_order() {
        let spec = r##"{"openapi": "3.0.0",
          "paths": {"/v1/products": {"post": {"requestBody": {"content": {"application/json":
              {"schema": {"$ref": "#/components/schemas/ProductInput"}}}}}},
            "/api/plugin/tasks/{id}/result": {"post": {"requestBody": {"content":
              {"application/json; charset=utf-8": {"schema": {}}}}}}},
          "components": {"schemas": {
            "LoginRequest": {"type": "object", "properties": {"email": {}, "password": {}}},
            "RefreshRequest": {"type": "object"}, "EnqueueRequest": {"type": "object", "properties": {"job": {"allOf": [
                {"$ref": "#/components/schemas/AnyJob"}, {"description": "The job."}]}}},
            "AnyJob": {"type": "object", "discriminator": {"propertyName": "kind"},
                       "anyOf": [{"$ref": "#/components/schemas/AnyJob_Noop"}]},
            "BatchRequest": {"type": "object"}, "ProductInput": {"type": "object", "properties": {"title": {}, "description": {},
                "brand": {}, "category": {}, "price": {}, "size": {}, "color": {},
                "images": {"type": "array", "items": {"type": "string"}}}},
            "PublishRequest": {"type": "object"}, "SettingsInput": {"type": "object"},
            "ConnectVinted": {"type": "object"}, "SessionReport": {"type": "object"},
            "BulkRequest": {"type": "object"},
            "Noop": {"type": "object", "description": "Sleeps.", "required": ["z"],
                     "properties": {"z": {"type": "integer", "format": "uint64"},
                                    "a": {"type": "string"}}},
            "AnyJob_Noop": {"allOf": [
                {"type": "object", "required": ["kind"], "properties": {"kind": {"enum": ["noop"]}}},
                {"$ref": "#/components/schemas/Noop"}]}}}}"##;
        let doc: serde_json::Value = serde_json::from_str(&super::document(spec)).unwrap();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["LoginRequest"]["additionalProperties"], false);
        assert_eq!(
            s["NewProduct"]["required"],
            serde_json::json!(["title", "condition", "price"])
        );
        assert_eq!(s["NewProduct"]["additionalProperties"], false);
        let job = &s["EnqueueRequest"]["properties"]["job"];
        assert_eq!(
            job,
            &serde_json::json!({"$ref": "#/components/schemas/AnyJob", "description": "The job."})
        );
        assert_eq!(
            s["EnqueueRequest"]["not"],
            serde_json::json!({"required": ["run_at", "delay_ms"]})
        );
        let price = regex_lite(&s["ProductInput"]["properties"]["price"]["pattern"]);
        for ok in [
            "1",
            "0.01",
            "0.5",
            "000000001",
            "999999999.99",
            "10",
            "0010.00",
        ] {
            assert!(price.is_match(ok), "{ok}");
        }
        for bad in [
            "0",
            "0.00",
            "000000000.0",
            "0000000001",
            "1234567890",
            "1.234",
            "",
            "1.",
        ] {
            assert!(!price.is_match(bad), "{bad}");
        }
        assert_eq!(
            doc["paths"]["/v1/products"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/NewProduct"
        );
        // The plugin result is one of its two closed shapes, both in the document.
        assert_eq!(
            doc["paths"]["/api/plugin/tasks/{id}/result"]["post"]["requestBody"]["content"]["application/json; charset=utf-8"]
                ["schema"],
            serde_json::json!({"oneOf": [
                {"$ref": "#/components/schemas/ResultRequest"},
                {"$ref": "#/components/schemas/ExtResultRequest"}]})
        );
        assert_eq!(s["ResultRequest"]["additionalProperties"], false);
        assert_eq!(s["ExtResultRequest"]["additionalProperties"], false);
        assert_eq!(
            s["ResultRequest"]["required"],
            serde_json::json!(["lease_id", "success"])
        );
        let v = &s["AnyJob_Noop"];
        assert_eq!(v["additionalProperties"], false);
        assert_eq!(v["description"], "Sleeps.");
        assert_eq!(v["required"], serde_json::json!(["kind", "z"]));
        assert_eq!(v["properties"]["z"]["minimum"], 0);
        assert_eq!(v["properties"]["a"].get("minimum"), None);
        // Written order kept: kind, then the kind's own fields as declared.
        let text = super::document(spec);
        let (k, z, a) = (
            text.find("\"kind\": {").unwrap(),
            text.rfind("\"z\": {").unwrap(),
            text.rfind("\"a\": {").unwrap(),
        );
        assert!(k < z && z < a, "{text}");
        assert!(text.find("\"openapi\"").unwrap() < text.find("\"components\"").unwrap());
    }
}
