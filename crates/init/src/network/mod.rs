//! Network configuration through netlink and DHCP (being written).
