//! The Etsy client against the Etsy simulator (in progress).
