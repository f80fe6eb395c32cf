//! Endpoint events as the element messages applications see on the bus.
//!
//! Structure names: `gb28181-device-registered`, `gb28181-device-unregistered`,
//! `gb28181-device-online`, `gb28181-device-offline`, `gb28181-keepalive-refused`,
//! `gb28181-auth-failed`, `gb28181-catalog`, `gb28181-device-info`, `gb28181-device-status`,
//! `gb28181-record-info`, `gb28181-media-status`, `gb28181-catalog-changed`, `gb28181-alarm`,
//! `gb28181-mobile-position`, `gb28181-subscription`, and the security events
//! `gb28181-source-blocked`, `gb28181-forged-request`, `gb28181-invalid-id`,
//! `gb28181-catalog-items-dropped` (see [`is_security_event`]).

use crate::core::registrar::{Event, UnregisterReason};
use crate::endpoint::EndpointEvent;

/// Events about refused or suspicious requests, which elements log at warning level.
pub fn is_security_event(e: &EndpointEvent) -> bool {
    matches!(
        e,
        EndpointEvent::Registrar(
            Event::AuthFailed { .. }
                | Event::SourceBlocked { .. }
                | Event::ForgedRequest { .. }
                | Event::InvalidId { .. }
        ) | EndpointEvent::CatalogItemsDropped { .. }
    )
}

/// A one-line description of a security event for logs (IDs are already printable).
pub fn describe(e: &EndpointEvent) -> String {
    match e {
        EndpointEvent::Registrar(Event::AuthFailed { device_id, source }) => {
            format!("failed authentication of device {device_id} from {source}")
        }
        EndpointEvent::Registrar(Event::SourceBlocked {
            ip,
            device_id,
            blocked_ms,
        }) => format!(
            "source {ip} blocked for {blocked_ms} ms after failed authentications (last as {device_id})"
        ),
        EndpointEvent::Registrar(Event::ForgedRequest {
            device_id,
            source,
            method,
            reason,
        }) => format!("refused {method} claiming to be device {device_id} from {source}: {reason}"),
        EndpointEvent::Registrar(Event::InvalidId {
            id,
            source,
            context,
        }) => format!("refused {context} with invalid ID {id:?} from {source}"),
        EndpointEvent::CatalogItemsDropped {
            device_id,
            invalid,
            over_limit,
            example,
        } => format!(
            "dropped Catalog items of device {device_id}: {invalid} with invalid IDs (e.g. {example:?}), {over_limit} beyond the channel limit"
        ),
        other => format!("{other:?}"),
    }
}

pub fn event_structure(e: &EndpointEvent) -> gst::Structure {
    match e {
        EndpointEvent::Registrar(r) => match r {
            Event::Registered {
                device_id,
                contact,
                source,
                expires_s,
                refresh,
            } => gst::Structure::builder("gb28181-device-registered")
                .field("device-id", device_id)
                .field("contact", contact)
                .field("source", source)
                .field("expires", *expires_s)
                .field("refresh", *refresh)
                .build(),
            Event::Unregistered { device_id, reason } => {
                gst::Structure::builder("gb28181-device-unregistered")
                    .field("device-id", device_id)
                    .field(
                        "reason",
                        match reason {
                            UnregisterReason::Requested => "requested",
                            UnregisterReason::Expired => "expired",
                        },
                    )
                    .build()
            }
            Event::Online { device_id } => gst::Structure::builder("gb28181-device-online")
                .field("device-id", device_id)
                .build(),
            Event::Offline { device_id } => gst::Structure::builder("gb28181-device-offline")
                .field("device-id", device_id)
                .build(),
            Event::KeepaliveRefused { device_id, source } => {
                gst::Structure::builder("gb28181-keepalive-refused")
                    .field("device-id", device_id)
                    .field("source", source)
                    .build()
            }
            Event::AuthFailed { device_id, source } => {
                gst::Structure::builder("gb28181-auth-failed")
                    .field("device-id", device_id)
                    .field("source", source)
                    .build()
            }
            Event::SourceBlocked {
                ip,
                device_id,
                blocked_ms,
            } => gst::Structure::builder("gb28181-source-blocked")
                .field("ip", ip)
                .field("device-id", device_id)
                .field("blocked-ms", *blocked_ms)
                .build(),
            Event::ForgedRequest {
                device_id,
                source,
                method,
                reason,
            } => gst::Structure::builder("gb28181-forged-request")
                .field("device-id", device_id)
                .field("source", source)
                .field("method", method)
                .field("reason", *reason)
                .build(),
            Event::InvalidId {
                id,
                source,
                context,
            } => gst::Structure::builder("gb28181-invalid-id")
                .field("id", id)
                .field("source", source)
                .field("context", *context)
                .build(),
        },
        EndpointEvent::CatalogItemsDropped {
            device_id,
            invalid,
            over_limit,
            example,
        } => gst::Structure::builder("gb28181-catalog-items-dropped")
            .field("device-id", device_id)
            .field("invalid", *invalid)
            .field("over-limit", *over_limit)
            .field("example", example)
            .build(),
        EndpointEvent::Catalog {
            device_id,
            sn,
            sum_num,
            items,
        } => {
            let ids: Vec<String> = items.iter().map(|i| i.device_id.clone()).collect();
            let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
            let status: Vec<String> = items.iter().map(|i| i.status.clone()).collect();
            gst::Structure::builder("gb28181-catalog")
                .field("device-id", device_id)
                .field("sn", *sn)
                .field("sum-num", *sum_num)
                .field("count", items.len() as u32)
                .field("channel-ids", gst::Array::new(ids))
                .field("names", gst::Array::new(names))
                .field("status", gst::Array::new(status))
                .build()
        }
        EndpointEvent::DeviceInfo { sn, info } => gst::Structure::builder("gb28181-device-info")
            .field("device-id", &info.device_id)
            .field("sn", *sn)
            .field("result", &info.result)
            .field("device-name", &info.device_name)
            .field("manufacturer", &info.manufacturer)
            .field("model", &info.model)
            .field("firmware", &info.firmware)
            .field("channel", info.channel.unwrap_or(0))
            .build(),
        EndpointEvent::RecordInfo {
            device_id,
            sn,
            sum_num,
            items,
        } => {
            let col = |f: fn(&crate::core::manscdp::RecordItem) -> &String| {
                gst::Array::new(items.iter().map(|i| f(i).clone()))
            };
            gst::Structure::builder("gb28181-record-info")
                .field("device-id", device_id)
                .field("sn", *sn)
                .field("sum-num", *sum_num)
                .field("count", items.len() as u32)
                .field("names", col(|i| &i.name))
                .field("start-times", col(|i| &i.start_time))
                .field("end-times", col(|i| &i.end_time))
                .field("types", col(|i| &i.record_type))
                .build()
        }
        EndpointEvent::MediaStatus {
            device_id,
            channel_id,
            notify_type,
        } => gst::Structure::builder("gb28181-media-status")
            .field("device-id", device_id)
            .field("channel-id", channel_id)
            .field("notify-type", *notify_type)
            .build(),
        EndpointEvent::DeviceStatus { sn, status } => {
            gst::Structure::builder("gb28181-device-status")
                .field("device-id", &status.device_id)
                .field("sn", *sn)
                .field("result", &status.result)
                .field("online", &status.online)
                .field("status", &status.status)
                .field("encode", &status.encode)
                .field("record", &status.record)
                .field("device-time", &status.device_time)
                .build()
        }
        EndpointEvent::CatalogChanged { device_id, items } => {
            let col = |f: fn(&crate::core::manscdp::CatalogItem) -> &String| {
                gst::Array::new(items.iter().map(|i| f(i).clone()))
            };
            gst::Structure::builder("gb28181-catalog-changed")
                .field("device-id", device_id)
                .field("count", items.len() as u32)
                .field("channel-ids", col(|i| &i.device_id))
                .field("events", col(|i| &i.event))
                .field("names", col(|i| &i.name))
                .field("status", col(|i| &i.status))
                .build()
        }
        EndpointEvent::Alarm { device_id, alarm } => {
            let mut b = gst::Structure::builder("gb28181-alarm")
                .field("device-id", device_id)
                .field("alarm-device-id", &alarm.device_id)
                .field("time", &alarm.time)
                .field("description", &alarm.description);
            if let Some(p) = alarm.priority {
                b = b.field("priority", p);
            }
            if let Some(m) = alarm.method {
                b = b.field("method", m);
            }
            if let Some(t) = alarm.alarm_type {
                b = b.field("alarm-type", t);
            }
            if let (Some(lon), Some(lat)) = (alarm.longitude, alarm.latitude) {
                b = b.field("longitude", lon).field("latitude", lat);
            }
            b.build()
        }
        EndpointEvent::MobilePosition {
            device_id,
            position: p,
        } => {
            let mut b = gst::Structure::builder("gb28181-mobile-position")
                .field("device-id", device_id)
                .field("time", &p.time);
            for (name, v) in [
                ("longitude", p.longitude),
                ("latitude", p.latitude),
                ("speed", p.speed),
                ("direction", p.direction),
                ("altitude", p.altitude),
            ] {
                if let Some(v) = v {
                    b = b.field(name, v);
                }
            }
            b.build()
        }
        EndpointEvent::Subscription {
            device_id,
            event,
            change,
        } => {
            use crate::core::subscription::Change;
            let b = gst::Structure::builder("gb28181-subscription")
                .field("device-id", device_id)
                .field("event", event);
            match change {
                Change::Active { expires_s } => {
                    b.field("state", "active").field("expires", *expires_s)
                }
                Change::Failed {
                    status,
                    retry_in_ms,
                } => b
                    .field("state", "failed")
                    .field("status", u32::from(status.unwrap_or(0)))
                    .field("retry-in-ms", *retry_in_ms),
                Change::Terminated { reason } => {
                    b.field("state", "terminated").field("reason", reason)
                }
            }
            .build()
        }
    }
}
