//! Subscriptions end to end without GStreamer, over loopback: the platform's endpoint
//! subscribes to a device agent's Catalog, MobilePosition and Alarm events; the device
//! answers, notifies, the subscription is refreshed in its dialog before it expires, ended
//! with Expires 0, renewed after the device registers again; alarms are acknowledged; a
//! forged alarm from another address is refused.

mod common;

use common::{Conn, device_agent, next_matching, request_to_server, serial, udp_endpoint};
use gstgb28181::core::manscdp::{self, CatalogItem, Charset};
use gstgb28181::core::notify::{self, Alarm};
use gstgb28181::core::subscription::{Change, EventKind};
use gstgb28181::device::DeviceEvent;
use gstgb28181::endpoint::{Endpoint, EndpointEvent, SipTransport};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

const DEV: &str = "34020000001320000001";

/// The endpoint's events on a channel.
fn events(ep: &Endpoint) -> mpsc::Receiver<EndpointEvent> {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    ep.subscribe(move |e| {
        let _ = tx.lock().unwrap().send(e.clone());
    });
    rx
}

fn registered(
    ep: &Arc<Endpoint>,
) -> (
    Arc<gstgb28181::device::DeviceAgent>,
    mpsc::Receiver<DeviceEvent>,
    mpsc::Receiver<EndpointEvent>,
) {
    let ev = events(ep);
    let (agent, dev) = device_agent(ep.local_addr());
    next_matching(&dev, |e| matches!(e, DeviceEvent::Registered { .. }));
    (agent, dev, ev)
}

#[test]
fn catalog_changes_are_subscribed_notified_and_ended() {
    let _g = serial();
    let ep = udp_endpoint();
    let (agent, dev, ev) = registered(&ep);
    ep.subscribe_events(DEV, EventKind::Catalog, 3600).unwrap();
    assert_eq!(
        next_matching(&dev, |e| matches!(e, DeviceEvent::Subscribed { .. })),
        DeviceEvent::Subscribed {
            event: "Catalog".into(),
            expires_s: 3600
        }
    );
    // The 200 (seen by the endpoint's timer) and the initial NOTIFY come in either order.
    let mut active = false;
    let mut initial = None;
    while !(active && initial.is_some()) {
        match next_matching(&ev, |e| {
            matches!(
                e,
                EndpointEvent::Subscription { .. } | EndpointEvent::CatalogChanged { .. }
            )
        }) {
            EndpointEvent::Subscription { change, .. } => {
                assert_eq!(change, Change::Active { expires_s: 3600 });
                active = true;
            }
            EndpointEvent::CatalogChanged { items, .. } => initial = Some(items),
            _ => unreachable!(),
        }
    }
    let items = initial.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].device_id.as_str(), items[0].event.as_str()),
        (DEV, "ADD")
    );
    // A new channel, then it goes away: both reported, and the added one becomes a channel
    // the endpoint believes the device about (its later MESSAGEs are accepted).
    let cam2 = "34020000001320000002";
    assert!(agent.notify_catalog(&[CatalogItem {
        device_id: cam2.into(),
        name: "gate".into(),
        status: "ON".into(),
        event: "ADD".into(),
        ..Default::default()
    }]));
    let EndpointEvent::CatalogChanged { items, .. } =
        next_matching(&ev, |e| matches!(e, EndpointEvent::CatalogChanged { .. }))
    else {
        unreachable!()
    };
    assert_eq!(
        (items[0].device_id.as_str(), items[0].event.as_str()),
        (cam2, "ADD")
    );
    // An item with an invalid ID is dropped and said.
    assert!(agent.notify_catalog(&[CatalogItem {
        device_id: "../../etc".into(),
        event: "ADD".into(),
        ..Default::default()
    }]));
    next_matching(&ev, |e| {
        matches!(e, EndpointEvent::CatalogItemsDropped { invalid: 1, .. })
    });
    let subs = ep.subscriptions();
    assert_eq!(subs.len(), 1);
    assert!(subs[0].active);
    assert!(subs[0].notifies >= 3, "{subs:?}");
    // Ended: Expires 0 reaches the device; nothing is left on either side.
    assert!(ep.unsubscribe_events(DEV, "catalog"));
    assert_eq!(
        next_matching(&dev, |e| matches!(e, DeviceEvent::Subscribed { .. })),
        DeviceEvent::Subscribed {
            event: "Catalog".into(),
            expires_s: 0
        }
    );
    assert!(agent.subscriptions().is_empty());
    assert!(ep.subscriptions().is_empty());
    assert!(!agent.notify_catalog(&[]), "no subscriber any more");
    agent.stop();
    ep.shutdown();
}

#[test]
fn short_subscriptions_are_refreshed_in_their_dialog_and_positions_arrive() {
    let _g = serial();
    let ep = udp_endpoint();
    let (agent, dev, ev) = registered(&ep);
    agent.set_position(121.47, 31.23);
    // 4 s granted: refreshed at 3 s, in the same dialog; reports every second.
    ep.subscribe_events(DEV, EventKind::MobilePosition { interval_s: 1 }, 4)
        .unwrap();
    next_matching(&dev, |e| {
        matches!(e, DeviceEvent::Subscribed { expires_s: 4, .. })
    });
    let mut positions = 0;
    let mut refreshed = false;
    let end = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < end && !(refreshed && positions >= 4) {
        if let Ok(EndpointEvent::MobilePosition {
            device_id,
            position,
        }) = ev.recv_timeout(Duration::from_millis(200))
        {
            assert_eq!(device_id, DEV);
            assert_eq!(position.longitude, Some(121.47));
            assert_eq!(position.latitude, Some(31.23));
            positions += 1;
        }
        if let Ok(DeviceEvent::Subscribed { expires_s: 4, .. }) = dev.try_recv() {
            refreshed = true;
        }
    }
    assert!(refreshed, "a refresh before the 4 s ran out");
    assert!(positions >= 4, "positions: {positions}");
    let s = &ep.subscriptions()[0];
    // (The refresh may be in flight right now: only what is certain.)
    assert!(s.requests >= 2 && s.failures == 0, "{s:?}");
    // The device kept one subscription (the refresh was in its dialog, not a second one).
    assert_eq!(agent.subscriptions().len(), 1);
    agent.stop();
    ep.shutdown();
}

#[test]
fn alarms_are_acknowledged_and_forged_ones_refused() {
    let _g = serial();
    let ep = udp_endpoint();
    let (agent, _dev, ev) = registered(&ep);
    ep.subscribe_events(DEV, EventKind::Alarm, 3600).unwrap();
    next_matching(&ev, |e| matches!(e, EndpointEvent::Subscription { .. }));
    agent
        .send_alarm(&Alarm {
            priority: Some(1),
            method: Some(5),
            description: "motion".into(),
            alarm_type: Some(2),
            ..Default::default()
        })
        .unwrap();
    let EndpointEvent::Alarm { device_id, alarm } =
        next_matching(&ev, |e| matches!(e, EndpointEvent::Alarm { .. }))
    else {
        unreachable!()
    };
    assert_eq!((device_id.as_str(), alarm.device_id.as_str()), (DEV, DEV));
    assert_eq!(
        (alarm.priority, alarm.method, alarm.alarm_type),
        (Some(1), Some(5), Some(2))
    );
    assert_eq!(alarm.description, "motion");
    assert_eq!(alarm.time.len(), 19, "{}", alarm.time);

    // Another socket claiming to be the device: 403, no alarm event.
    let mut forger = Conn::open(SipTransport::Udp, ep.local_addr());
    let mut m = request_to_server("MESSAGE", DEV);
    m.set_body(
        "Application/MANSCDP+xml",
        manscdp::encode_body(
            &notify::build_alarm_notify(&Alarm {
                sn: 99,
                device_id: DEV.into(),
                description: "forged".into(),
                ..Default::default()
            }),
            Charset::Gb2312,
        ),
    );
    assert_eq!(forger.request(&m, Duration::from_secs(3)), Some(403));
    next_matching(&ev, |e| {
        matches!(
            e,
            EndpointEvent::Registrar(gstgb28181::core::registrar::Event::ForgedRequest { .. })
        )
    });
    // Nothing about the forged alarm reached the subscribers.
    while let Ok(e) = ev.try_recv() {
        assert!(
            !matches!(&e, EndpointEvent::Alarm { alarm, .. } if alarm.description == "forged"),
            "{e:?}"
        );
    }
    agent.stop();
    ep.shutdown();
}

#[test]
fn a_device_that_registers_again_is_subscribed_anew_and_unknown_ones_are_refused() {
    let _g = serial();
    let ep = udp_endpoint();
    assert_eq!(
        ep.subscribe_events(DEV, EventKind::Catalog, 3600)
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::NotFound
    );
    let (agent, dev, _ev) = registered(&ep);
    ep.subscribe_events(DEV, EventKind::Catalog, 3600).unwrap();
    next_matching(&dev, |e| matches!(e, DeviceEvent::Subscribed { .. }));
    // The device reboots: a new agent (new port, no subscriptions) registers; the endpoint
    // subscribes to it again by itself.
    agent.stop();
    let (agent2, dev2) = device_agent(ep.local_addr());
    next_matching(&dev2, |e| matches!(e, DeviceEvent::Registered { .. }));
    next_matching(&dev2, |e| {
        matches!(
            e,
            DeviceEvent::Subscribed {
                expires_s: 3600,
                ..
            }
        )
    });
    assert_eq!(agent2.subscriptions().len(), 1);
    agent2.stop();
    ep.shutdown();
}
