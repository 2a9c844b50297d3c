//! Etsy Open API v3 client (in progress).
