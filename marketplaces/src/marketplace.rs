//! Which marketplace, and the condition scale the clients' mappings start from.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum Marketplace {
    Ebay,
    Etsy,
    Vinted,
}

impl Marketplace {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebay => "ebay",
            Self::Etsy => "etsy",
            Self::Vinted => "vinted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ebay" => Some(Self::Ebay),
            "etsy" => Some(Self::Etsy),
            "vinted" => Some(Self::Vinted),
            _ => None,
        }
    }
}

/// Condition on Vinted's scale (eBay's and Etsy's are derived from it when publishing).
pub const CONDITIONS: &[&str] = &[
    "new_with_tags",
    "new_without_tags",
    "very_good",
    "good",
    "satisfactory",
];
