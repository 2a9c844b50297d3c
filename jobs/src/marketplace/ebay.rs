//! eBay Sell APIs client (in progress).
