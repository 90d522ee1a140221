//! s6-rc log pipelines (`producer-for`, `consumer-for`, `pipeline-name`), checked as
//! `s6-rc-compile` checks them: both ends are longruns and declare each other, a producer feeds one
//! consumer, a consumer may read several producers (fan-in: one pipe), no cycles. Each producer
//! then depends on its consumer, so the reader is up before the first line is written and stops
//! after the last one; a `pipeline-name` on a last consumer becomes a bundle of the pipeline.

use super::ServiceKind;
use super::diag::Problems;
use super::s6dir::Bundle;
use super::spec::ServiceSpec;
use super::tree::Located;

pub fn link(specs: &mut [ServiceSpec], bundles: &mut Vec<Bundle>, problems: &mut Problems) {
    let kind = |s: &ServiceSpec| s.kind.as_ref().map_or(ServiceKind::Longrun, |k| k.value);
    let mut links = Vec::new();
    for spec in specs.iter() {
        if let Some(consumer) = &spec.producer_for {
            let Some(c) = specs.iter().find(|s| s.name == consumer.value) else {
                problems.push(
                    consumer.loc.clone(),
                    format!("{:?} is not a service", consumer.value),
                );
                continue;
            };
            if kind(spec) != ServiceKind::Longrun || kind(c) != ServiceKind::Longrun {
                problems.push(
                    consumer.loc.clone(),
                    "both ends of a pipeline must be longruns",
                );
                continue;
            }
            let declared = c
                .consumer_for
                .as_ref()
                .is_some_and(|l| l.value.iter().any(|p| p.value == spec.name));
            if !declared {
                problems.push(
                    consumer.loc.clone(),
                    format!(
                        "{:?} does not list {:?} in its consumer-for",
                        c.name, spec.name
                    ),
                );
                continue;
            }
            links.push((spec.name.clone(), consumer.clone()));
        }
        for producer in spec.consumer_for.iter().flat_map(|l| &l.value) {
            let declared = specs.iter().any(|p| {
                p.name == producer.value
                    && p.producer_for
                        .as_ref()
                        .is_some_and(|c| c.value == spec.name)
            });
            if !declared {
                problems.push(
                    producer.loc.clone(),
                    format!(
                        "{:?} does not declare {:?} in its producer-for",
                        producer.value, spec.name
                    ),
                );
            }
        }
    }
    for (producer, consumer) in links {
        if let Some(spec) = specs.iter_mut().find(|s| s.name == producer) {
            let deps = spec.depends_on.get_or_insert_with(|| Located {
                value: Vec::new(),
                loc: consumer.loc.clone(),
            });
            deps.value.push(consumer);
        }
    }
    for spec in specs.iter() {
        let Some(name) = &spec.pipeline_name else {
            continue;
        };
        if spec.consumer_for.is_none() || spec.producer_for.is_some() {
            continue; // s6-rc ignores it on anything but a last consumer
        }
        let mut members = Vec::new();
        let mut stack = vec![spec.name.clone()];
        while let Some(n) = stack.pop() {
            if members.iter().any(|m: &Located<String>| m.value == n) {
                continue; // a cycle: reported as a dependency cycle
            }
            if let Some(s) = specs.iter().find(|s| s.name == n) {
                stack.extend(
                    s.consumer_for
                        .iter()
                        .flat_map(|l| &l.value)
                        .map(|p| p.value.clone()),
                );
            }
            members.push(Located {
                value: n,
                loc: name.loc.clone(),
            });
        }
        bundles.push(Bundle {
            name: name.value.clone(),
            loc: name.loc.clone(),
            members,
        });
    }
}
