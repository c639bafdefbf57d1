pub mod proxy_protocol;
