//! The pipeline as a graph (petgraph): a stage depends on the stages whose
//! outputs overlap its inputs. Validation that needs the whole graph lives here:
//! two stages writing the same output, a cycle, an input nobody makes.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use anyhow::{bail, Result};
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use super::pipeline::{Pipeline, StageSpec};
use crate::relpath::RelPath;

/// A validated pipeline: stages in a topological order.
#[derive(Debug)]
pub struct Dag {
    pub pipeline: Pipeline,
    graph: DiGraph<usize, ()>,
    /// Stage indices, each after every stage it depends on (ties in file order).
    pub order: Vec<usize>,
}

impl Dag {
    pub fn build(pipeline: Pipeline) -> Result<Dag> {
        let stages = &pipeline.stages;
        let file = pipeline.file.display().to_string();
        // Outputs: no two stages (or two outputs) may overlap.
        let mut outs: Vec<(&RelPath, &StageSpec)> = Vec::new();
        for s in stages {
            for o in &s.outs {
                for (p, other) in &outs {
                    if p.overlaps(&o.path) {
                        if *p == &o.path {
                            bail!(
                                "{file}: stages '{}' and '{}' both write '{}'; every output has one producer: rename one",
                                other.name, s.name, o.path
                            );
                        }
                        bail!(
                            "{file}: output '{}' of stage '{}' overlaps output '{}' of stage '{}'; outputs may not nest",
                            o.path, s.name, p, other.name
                        );
                    }
                }
                outs.push((&o.path, s));
            }
        }
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
        for (ci, c) in stages.iter().enumerate() {
            for d in &c.deps {
                for (pi, p) in stages.iter().enumerate() {
                    if p.outs.iter().any(|o| o.path.overlaps(&d.path)) {
                        if pi == ci {
                            bail!(
                                "{file}: stage '{}' reads '{}', which it writes itself; a stage cannot depend on its own output",
                                c.name, d.path
                            );
                        }
                        graph.update_edge(nodes[pi], nodes[ci], ());
                    }
                }
            }
        }
        if let Err(cycle) = toposort(&graph, None) {
            let path = find_cycle(&graph, cycle.node_id());
            let names: Vec<&str> = path
                .iter()
                .map(|n| stages[graph[*n]].name.as_str())
                .collect();
            bail!(
                "{file}: the stages form a cycle: {}; remove one of these dependencies",
                names.join(" -> ")
            );
        }
        // Kahn's algorithm with the smallest file position first, so the order is stable.
        let mut indeg: Vec<usize> = nodes
            .iter()
            .map(|n| graph.neighbors_directed(*n, Direction::Incoming).count())
            .collect();
        let mut ready: BTreeSet<usize> = (0..stages.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(stages.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for n in graph.neighbors_directed(nodes[i], Direction::Outgoing) {
                let j = graph[n];
                indeg[j] -= 1;
                if indeg[j] == 0 {
                    ready.insert(j);
                }
            }
        }
        Ok(Dag {
            pipeline,
            graph,
            order,
        })
    }

    pub fn stages(&self) -> &[StageSpec] {
        &self.pipeline.stages
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.stages().iter().position(|s| s.name == name)
    }

    /// The stage index for a name the user typed, or an error that lists the stages.
    pub fn lookup(&self, name: &str, flag: &str) -> Result<usize> {
        match self.index(name) {
            Some(i) => Ok(i),
            None => {
                if let Some((_, ps)) = self.pipeline.other_profiles.iter().find(|(n, _)| n == name)
                {
                    bail!(
                        "{flag} {name}: stage {name} belongs to the profile{} {} only, and this \
                         command uses the profile {} (choose with --profile or PIPELINE_PROFILE)",
                        if ps.len() == 1 { "" } else { "s" },
                        ps.join(", "),
                        self.pipeline.profile
                    )
                }
                let names: Vec<&str> = self.stages().iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "{flag} {name}: no such stage in {} (stages: {})",
                    self.pipeline.file.display(),
                    names.join(", ")
                )
            }
        }
    }

    /// Direct upstream stages of `i`.
    pub fn upstream(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| self.graph[n])
            .collect();
        v.sort();
        v
    }

    /// Direct downstream stages of `i`.
    pub fn downstream(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(|n| self.graph[n])
            .collect();
        v.sort();
        v
    }

    /// `i` and everything it depends on, transitively.
    pub fn with_ancestors(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([i]);
        let mut q = VecDeque::from([i]);
        while let Some(j) = q.pop_front() {
            for u in self.upstream(j) {
                if seen.insert(u) {
                    q.push_back(u);
                }
            }
        }
        seen
    }

    /// Checks that every input no stage produces exists in the workspace.
    pub fn check_sources(&self, workspace: &Path) -> Result<()> {
        for s in self.stages() {
            for d in &s.deps {
                let produced = self
                    .stages()
                    .iter()
                    .any(|p| p.outs.iter().any(|o| o.path.overlaps(&d.path)));
                if !produced && !d.path.under(workspace).exists() {
                    bail!(
                        "{}: stage '{}' reads '{}', which no stage produces and which does not exist in the workspace {}; create it or add the stage that makes it",
                        s.defined_in.display(),
                        s.name,
                        d.path,
                        workspace.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// The graph in Graphviz dot.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph pipeline {\n  rankdir=TB;\n  node [shape=box];\n");
        for &i in &self.order {
            let st = &self.stages()[i];
            s.push_str(&format!(
                "  \"{}\" [label=\"{}\\n({})\"];\n",
                st.name,
                st.name,
                st.kind_name()
            ));
        }
        for &i in &self.order {
            for d in self.downstream(i) {
                s.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    self.stages()[i].name,
                    self.stages()[d].name
                ));
            }
        }
        s.push_str("}\n");
        s
    }

    /// The graph as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart TD\n");
        for &i in &self.order {
            let st = &self.stages()[i];
            s.push_str(&format!(
                "  {}[\"{} ({})\"]\n",
                mermaid_id(&st.name),
                st.name,
                st.kind_name()
            ));
        }
        for &i in &self.order {
            for d in self.downstream(i) {
                s.push_str(&format!(
                    "  {} --> {}\n",
                    mermaid_id(&self.stages()[i].name),
                    mermaid_id(&self.stages()[d].name)
                ));
            }
        }
        s
    }

    /// The graph as indented text: each stage with what it needs.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for &i in &self.order {
            let st = &self.stages()[i];
            let up: Vec<&str> = self
                .upstream(i)
                .iter()
                .map(|&u| self.stages()[u].name.as_str())
                .collect();
            s.push_str(&format!("{} ({})", st.name, st.kind_name()));
            if !up.is_empty() {
                s.push_str(&format!("  <- {}", up.join(", ")));
            }
            s.push('\n');
            for d in &st.deps {
                s.push_str(&format!("    in   {}\n", d.path));
            }
            for o in &st.outs {
                s.push_str(&format!("    out  {}\n", o.path));
            }
        }
        s
    }
}

/// A Mermaid node id for a stage name: always prefixed (so `end`, `subgraph`
/// and other keywords are never an id) and one-to-one (`a.b`, `a_b` and `a-b`
/// stay three nodes): `_` is doubled, `-` becomes `_h`, `.` becomes `_d`.
fn mermaid_id(name: &str) -> String {
    let mut id = String::from("s_");
    for c in name.chars() {
        match c {
            '_' => id.push_str("__"),
            '-' => id.push_str("_h"),
            '.' => id.push_str("_d"),
            c => id.push(c),
        }
    }
    id
}

/// A path of nodes from `start` back to itself.
fn find_cycle(g: &DiGraph<usize, ()>, start: NodeIndex) -> Vec<NodeIndex> {
    let mut prev = vec![None; g.node_count()];
    let mut q = VecDeque::from([start]);
    while let Some(n) = q.pop_front() {
        for m in g.neighbors_directed(n, Direction::Outgoing) {
            if m == start {
                let mut path = vec![start];
                let mut at = n;
                while at != start {
                    path.push(at);
                    at = prev[at.index()].expect("on the path");
                }
                path.push(start);
                let len = path.len();
                path[1..len - 1].reverse();
                return path;
            }
            if prev[m.index()].is_none() {
                prev[m.index()] = Some(n);
                q.push_back(m);
            }
        }
    }
    vec![start]
}
