pub mod auth;
pub mod connections;
pub mod events;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod orders;
pub mod plugin;
pub mod products;
pub mod queues;
pub mod settings;
pub mod webhooks;

#[derive(poem_openapi::Tags)]
pub enum Tag {
    /// Log in, refresh tokens.
    Auth,
    /// Enqueue and follow jobs.
    Jobs,
    /// The seller's catalogue.
    Products,
    /// Marketplace accounts and their OAuth consent flows.
    Connections,
    /// Orders imported from the marketplaces, and what the marketplaces refused.
    Orders,
    /// Queue depth per kind.
    Queues,
    /// Marketplace rate-limit budgets and circuit breakers.
    Limits,
    /// Liveness and readiness probes.
    Health,
    /// The ops dashboard's views and bulk actions (ops role).
    Dashboard,
    /// Notifications the marketplaces push (signed; no login).
    Webhooks,
}

/// Parses a keyset cursor given out by a list endpoint (the last id of the previous page).
pub fn parse_cursor(c: Option<&str>) -> Result<Option<i64>, crate::problem::Problem> {
    match c {
        None => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| {
                crate::problem::Problem::bad_request(format!(
                    "cursor {c:?} is not a cursor returned by this endpoint"
                ))
            }),
    }
}

/// A job kind's name (query parameter or body field): the document lists the kinds, so a client
/// knows them, and anything else is refused with the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindName(pub String);

impl poem_openapi::types::Type for KindName {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "KindName".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Reference(Self::name().into_owned())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        registry.create_schema::<Self, _>(Self::name().into_owned(), |_| {
            poem_openapi::registry::MetaSchema {
                description: Some("A job kind."),
                enum_items: ::jobs::kinds::ALL_KINDS
                    .iter()
                    .map(|k| serde_json::Value::from(*k))
                    .collect(),
                ..poem_openapi::registry::MetaSchema::new("string")
            }
        });
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl KindName {
    fn parse(k: &str) -> poem_openapi::types::ParseResult<Self> {
        if ::jobs::kinds::ALL_KINDS.contains(&k) {
            Ok(Self(k.to_string()))
        } else {
            Err(poem_openapi::types::ParseError::custom(format!(
                "unknown kind {k:?}; known kinds: {}",
                ::jobs::kinds::ALL_KINDS.join(", ")
            )))
        }
    }
}

impl poem_openapi::types::ParseFromParameter for KindName {
    fn parse_from_parameter(value: &str) -> poem_openapi::types::ParseResult<Self> {
        Self::parse(value)
    }
}

impl poem_openapi::types::ParseFromJSON for KindName {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(k)) => Self::parse(&k),
            v => Err(poem_openapi::types::ParseError::expected_type(
                v.unwrap_or_default(),
            )),
        }
    }
}

impl poem_openapi::types::ToJSON for KindName {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}
