//! Publish and play authorization from the config file: the `[[channels]]`
//! table maps secret stream keys to public channel names. The control plane
//! replaces this with its database through the same trait.

use std::collections::{HashMap, HashSet};

use westream_control::hooks::{Denied, MediaHooks, PlayRequest, PublishGrant, PublishRequest};

use crate::config::Config;

/// Channels and keys from the config.
#[derive(Debug, Clone)]
pub struct StaticChannels {
    apps: HashSet<String>,
    by_key: HashMap<String, String>,
    names: HashSet<String>,
}

impl StaticChannels {
    /// Builds the table from a validated config.
    pub fn from_config(config: &Config) -> StaticChannels {
        StaticChannels {
            apps: config.rtmp.apps.iter().cloned().collect(),
            by_key: config.channels.iter().map(|c| (c.stream_key.clone(), c.name.clone())).collect(),
            names: config.channels.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

#[async_trait::async_trait]
impl MediaHooks for StaticChannels {
    async fn authorize_publish(&self, req: &PublishRequest) -> Result<PublishGrant, Denied> {
        if !self.apps.contains(&req.app) {
            return Err(Denied::UnknownApp { app: req.app.clone() });
        }
        match self.by_key.get(&req.stream_key) {
            Some(channel) => Ok(PublishGrant { channel: channel.clone() }),
            None => Err(Denied::UnknownKey),
        }
    }

    async fn authorize_play(&self, req: &PlayRequest) -> Result<(), Denied> {
        if !self.apps.contains(&req.app) {
            return Err(Denied::UnknownApp { app: req.app.clone() });
        }
        if self.names.contains(&req.channel) {
            Ok(())
        } else {
            Err(Denied::UnknownChannel { channel: req.channel.clone() })
        }
    }
}

/// A stream key as it may appear in logs: its first two characters only.
pub fn mask_key(key: &str) -> String {
    let head: String = key.chars().take(2).collect();
    format!("{head}***")
}

#[cfg(test)]
mod tests {
    use super::*;
    use westream_control::hooks::PlayProtocol;

    fn table() -> StaticChannels {
        let cfg = Config::parse("[[channels]]\nname='demo'\nstream_key='demo-key'\n").unwrap();
        StaticChannels::from_config(&cfg)
    }

    fn publish(app: &str, key: &str) -> PublishRequest {
        PublishRequest { app: app.into(), stream_key: key.into(), client_addr: None }
    }

    fn play(channel: &str) -> PlayRequest {
        PlayRequest { app: "live".into(), channel: channel.into(), token: None, protocol: PlayProtocol::Rtmp, client_addr: None }
    }

    #[tokio::test]
    async fn key_maps_to_its_channel_and_nothing_else_does() {
        let t = table();
        assert_eq!(t.authorize_publish(&publish("live", "demo-key")).await, Ok(PublishGrant { channel: "demo".into() }));
        assert_eq!(t.authorize_publish(&publish("live", "demo")).await, Err(Denied::UnknownKey));
        assert!(matches!(t.authorize_publish(&publish("other", "demo-key")).await, Err(Denied::UnknownApp { .. })));
    }

    #[tokio::test]
    async fn play_uses_the_channel_name_never_the_key() {
        let t = table();
        assert_eq!(t.authorize_play(&play("demo")).await, Ok(()));
        assert!(t.authorize_play(&play("demo-key")).await.is_err());
    }

    #[test]
    fn masked_key_hides_all_but_two_characters() {
        assert_eq!(mask_key("demo-key"), "de***");
        assert_eq!(mask_key("d"), "d***");
    }
}
