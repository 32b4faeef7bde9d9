//! `confab-bench`: an open-loop load generator for Confab and its peers.

fn main() {}
