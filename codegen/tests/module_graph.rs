//! The generator's modules depend on each other in one direction only: no chain of `crate::`
//! references leads from a module back to itself. A cycle (render naming a hypervisor's
//! template while the hypervisors name render's constants, say) is reported with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

mod common;

/// Top-level module name → the top-level modules its non-test code names with `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = common::files_with_extension(src, "rs");
    let module_of = |file: &Path| -> String {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        first.to_str().unwrap().trim_end_matches(".rs").to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere; only the code that ships counts.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let code: String = code
            .lines()
            .map(|line| line.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let edges = graph.entry(module.clone()).or_default();
        for name in crate_references(&code) {
            if name != module && modules.contains(&name) {
                edges.insert(name);
            }
        }
    }
    graph
}

/// The modules a text names: `crate::a::…`, and each first name in `use crate::{a, b::{c}};`.
fn crate_references(text: &str) -> Vec<String> {
    let identifier = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Each item at the group's own depth starts with a module name.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        names.push(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(identifier(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Every cycle found by a depth-first walk, as `a -> b -> a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn walk(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(start) = path.iter().position(|p| p == next) {
                let mut cycle = path[start..].to_vec();
                cycle.push(next.clone());
                found.push(cycle.join(" -> "));
            } else if !done.contains(next) {
                walk(next, graph, path, done, found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !done.contains(node) {
            walk(node, graph, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

#[test]
fn no_module_of_the_generator_depends_on_itself_through_others() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The walk sees the modules it must: a graph that read nothing would pass vacuously.
    for (module, uses) in [
        ("runner", "hypervisor"),
        ("render", "templates"),
        ("lint", "exit_code"),
    ] {
        assert!(
            graph.get(module).is_some_and(|deps| deps.contains(uses)),
            "{module} should be seen to use {uses}: {graph:?}"
        );
    }
    assert_eq!(cycles(&graph), Vec::<String>::new());
}

#[test]
fn a_cycle_is_reported_with_its_path() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.iter().map(|d| d.to_string()).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec!["a -> b -> c -> a".to_owned()]);
    assert_eq!(
        crate_references(
            "use crate::{\n    render::{self, X},\n    runner,\n};\ncrate::spec::Tool"
        ),
        vec!["render", "runner", "spec"]
    );
}
