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
//! - `POST /v1/products` takes `ProductInput` with `title`, `condition` and `price` required: the
//!   document names that `NewProduct`.

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
    let schemas = doc
        .obj_mut()
        .and_then(|d| d.get_mut("components"))
        .and_then(J::obj_mut)
        .and_then(|c| c.get_mut("schemas"))
        .and_then(J::obj_mut)
        .expect("the document has component schemas");
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
    new_product(&mut doc);
    unsigned_minimum(&mut doc);
    let mut out = serde_json::to_string_pretty(&doc).expect("serialize");
    out.push('\n');
    out
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
    #[test]
    fn closes_objects_merges_kind_variants_and_names_new_product_in_written_order() {
        let spec = r##"{"openapi": "3.0.0",
          "paths": {"/v1/products": {"post": {"requestBody": {"content": {"application/json":
              {"schema": {"$ref": "#/components/schemas/ProductInput"}}}}}}},
          "components": {"schemas": {
            "LoginRequest": {"type": "object", "properties": {"email": {}, "password": {}}},
            "RefreshRequest": {"type": "object"}, "EnqueueRequest": {"type": "object"},
            "BatchRequest": {"type": "object"}, "ProductInput": {"type": "object", "properties": {"title": {}}},
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
        assert_eq!(
            doc["paths"]["/v1/products"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/NewProduct"
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
