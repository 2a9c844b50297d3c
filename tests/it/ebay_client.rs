//! The eBay client against the eBay simulator (in progress).
