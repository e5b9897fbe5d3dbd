//! Proxies of the manager's synchronisation types.
