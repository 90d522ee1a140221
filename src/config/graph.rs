//! The dependency graph of the services: one definition per name, s6 bundles expanded into their
//! members, dependencies that name nothing, cycles (printed as `a -> b -> c -> a`), at most one
//! `main`, and the start order: a topological order, ties broken by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::diag::{Loc, Problems};
use super::s6dir::Bundle;
use super::spec::ServiceSpec;
use super::tree::Located;

/// One definition per name, across the config file, the services directory and bundles.
pub fn dedupe(
    specs: Vec<ServiceSpec>,
    bundles: &[Bundle],
    problems: &mut Problems,
) -> Vec<ServiceSpec> {
    let mut seen: BTreeMap<String, Loc> = BTreeMap::new();
    let mut out = Vec::new();
    for bundle in bundles {
        seen.insert(bundle.name.clone(), bundle.loc.clone());
    }
    for spec in specs {
        let here = spec.defined_in();
        if let Some(first) = seen.get(&spec.name) {
            let msg = format!(
                "service {:?} is defined twice: here and in {}",
                spec.name,
                describe(first)
            );
            problems.push(here, msg);
            continue;
        }
        seen.insert(spec.name.clone(), here);
        out.push(spec);
    }
    out
}

fn describe(loc: &Loc) -> String {
    match loc.line {
        Some((line, col)) => format!("{}:{line}:{col}", loc.file.display()),
        None => loc.file.display().to_string(),
    }
}

/// Bundles may only contain services and other bundles; cycles among bundles are caught here.
pub fn expand_bundles(specs: &[ServiceSpec], bundles: &[Bundle], problems: &mut Problems) {
    for bundle in bundles {
        let mut stack = vec![bundle.name.as_str()];
        check_bundle(bundle, specs, bundles, &mut stack, problems);
    }
}

fn check_bundle<'a>(
    bundle: &'a Bundle,
    specs: &[ServiceSpec],
    bundles: &'a [Bundle],
    stack: &mut Vec<&'a str>,
    problems: &mut Problems,
) {
    for member in &bundle.members {
        if specs.iter().any(|s| s.name == member.value) {
            continue;
        }
        match bundles.iter().find(|b| b.name == member.value) {
            Some(inner) if stack[0] == inner.name => {
                let cycle = stack
                    .iter()
                    .chain([&inner.name.as_str()])
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" -> ");
                problems.push(member.loc.clone(), format!("bundle cycle: {cycle}"));
            }
            // A cycle not through this bundle is reported when its own first bundle is checked.
            Some(inner) if stack.contains(&inner.name.as_str()) => {}
            Some(inner) => {
                stack.push(&inner.name);
                check_bundle(inner, specs, bundles, stack, problems);
                stack.pop();
            }
            None if stack.len() == 1 => {
                let msg = format!(
                    "bundle {:?} contains {:?}, which is not a service or bundle",
                    bundle.name, member.value
                );
                problems.push(member.loc.clone(), msg);
            }
            None => {}
        }
    }
}

/// A dependency name expanded through bundles into service names.
fn expand(name: &str, bundles: &[Bundle], out: &mut BTreeSet<String>, seen: &mut BTreeSet<String>) {
    match bundles.iter().find(|b| b.name == name) {
        Some(bundle) if seen.insert(bundle.name.clone()) => {
            for member in &bundle.members {
                expand(&member.value, bundles, out, seen);
            }
        }
        Some(_) => {}
        None => {
            out.insert(name.to_string());
        }
    }
}

pub fn direct_deps(spec: &ServiceSpec, specs: &[ServiceSpec], bundles: &[Bundle]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for dep in spec.depends_on.iter().flat_map(|d| &d.value) {
        expand(&dep.value, bundles, &mut out, &mut BTreeSet::new());
    }
    out.remove(&spec.name);
    out.into_iter()
        .filter(|d| specs.iter().any(|s| &s.name == d))
        .collect()
}

pub fn check_main(specs: &[ServiceSpec], problems: &mut Problems) {
    let mains: Vec<&Located<bool>> = specs
        .iter()
        .filter_map(|s| s.main.as_ref())
        .filter(|m| m.value)
        .collect();
    if let [first, rest @ ..] = mains.as_slice() {
        for other in rest {
            let msg = format!(
                "only one service can be `main`; {} already is",
                describe(&first.loc)
            );
            problems.push(other.loc.clone(), msg);
        }
    }
}

/// Missing dependencies, cycles, then a topological order (ties broken by name).
pub fn start_order(
    specs: &[ServiceSpec],
    bundles: &[Bundle],
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let mut ok = true;
    for spec in specs {
        for dep in spec.depends_on.iter().flat_map(|d| &d.value) {
            let mut expanded = BTreeSet::new();
            expand(&dep.value, bundles, &mut expanded, &mut BTreeSet::new());
            if dep.value == spec.name {
                problems.push(
                    dep.loc.clone(),
                    format!("service {:?} depends on itself", spec.name),
                );
                ok = false;
            }
            for name in expanded {
                if !specs.iter().any(|s| s.name == name) && !bundles.iter().any(|b| b.name == name)
                {
                    let msg = format!(
                        "service {:?} depends on {name:?}, which is not defined",
                        spec.name
                    );
                    problems.push(dep.loc.clone(), msg);
                    ok = false;
                }
            }
        }
    }
    let graph: BTreeMap<&str, Vec<String>> = specs
        .iter()
        .map(|s| (s.name.as_str(), direct_deps(s, specs, bundles)))
        .collect();
    for cycle in cycles(&graph) {
        let first = specs.iter().find(|s| s.name == cycle[0]);
        let loc = first
            .and_then(|s| s.depends_on.as_ref().map(|d| d.loc.clone()))
            .unwrap_or_else(|| {
                first.map_or_else(|| Loc::file(Path::new(".")), ServiceSpec::defined_in)
            });
        problems.push(loc, format!("dependency cycle: {}", cycle.join(" -> ")));
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(name, deps)| (*name, deps.iter().map(String::as_str).collect()))
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while let Some(next) = remaining
        .iter()
        .find(|(_, deps)| deps.is_empty())
        .map(|(name, _)| *name)
    {
        remaining.remove(next);
        for deps in remaining.values_mut() {
            deps.remove(next);
        }
        order.push(next.to_string());
    }
    Some(order)
}

/// Every elementary cycle reached by a depth-first walk, as `[a, b, c, a]`; each reported once.
fn cycles(graph: &BTreeMap<&str, Vec<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<&str, Vec<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(node, Mark::Active);
        stack.push(node);
        for dep in graph.get(node).into_iter().flatten() {
            match marks.get(dep.as_str()).copied().unwrap_or(Mark::Done) {
                Mark::New => visit(dep, graph, marks, stack, found),
                Mark::Active => {
                    let start = stack.iter().position(|n| n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(dep.clone());
                    found.push(cycle);
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node, Mark::Done);
    }
    let mut marks: BTreeMap<&str, Mark> = graph.keys().map(|k| (*k, Mark::New)).collect();
    let mut found = Vec::new();
    for node in graph.keys() {
        if marks[node] == Mark::New {
            visit(node, graph, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}
