//! The lock orderer: jobs and "lock me before them" declarations in, ordered steps out.
//!
//! Pure: no I/O, no processes. One graph covers every job on every instance, so the same code
//! orders one VM and a whole deployment. "A should be locked before B" adds an edge from A to
//! every job named B (and of B's release, where the release is known); an edge to a job that is
//! not there is ignored, as BBR ignores it. Steps are Kahn layers; unlock runs them reversed.

use std::collections::BTreeSet;

use crate::metadata::LockBefore;

/// One job on one instance, as the orderer sees it.
#[derive(Debug, Clone)]
pub struct OrderNode<'a> {
    /// How the job is named in a cycle error, e.g. `redis/0 redis-server`.
    pub label: String,
    pub job_name: &'a str,
    /// The job's release, where it is known; an unknown release matches any.
    pub release: Option<&'a str>,
    pub locks_before: &'a [LockBefore],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the lock order is cyclic: {} (fix the jobs' metadata; nothing was locked)",
    cycle.join(" -> ")
)]
pub struct CycleError {
    /// The jobs of one cycle, the first repeated at the end.
    pub cycle: Vec<String>,
}

/// Lock steps: indices into the node list (or what they were mapped to); the jobs of a step
/// may run in parallel. The one place the unlock order is made: the lock order reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps<T = usize>(pub Vec<Vec<T>>);

impl<T> Steps<T> {
    pub fn lock_order(&self) -> impl Iterator<Item = &[T]> {
        self.0.iter().map(Vec::as_slice)
    }

    pub fn unlock_order(&self) -> impl Iterator<Item = &[T]> {
        self.0.iter().rev().map(Vec::as_slice)
    }

    /// The same steps, each node replaced by `f` of it.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Steps<U> {
        Steps(
            self.0
                .into_iter()
                .map(|step| step.into_iter().map(&mut f).collect())
                .collect(),
        )
    }

    /// The same steps with only the nodes `keep` says (a step may become empty).
    pub fn retain(mut self, mut keep: impl FnMut(&T) -> bool) -> Steps<T> {
        for step in &mut self.0 {
            step.retain(&mut keep);
        }
        self
    }
}

/// Orders `nodes` into layered steps, or names a cycle.
pub fn order(nodes: &[OrderNode<'_>]) -> Result<Steps, CycleError> {
    let edges = edges(nodes);
    let mut in_degree = vec![0usize; nodes.len()];
    for targets in &edges {
        for &t in targets {
            in_degree[t] += 1;
        }
    }
    let mut remaining: BTreeSet<usize> = (0..nodes.len()).collect();
    let mut steps = Vec::new();
    while !remaining.is_empty() {
        let step: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&n| in_degree[n] == 0)
            .collect();
        if step.is_empty() {
            return Err(CycleError {
                cycle: find_cycle(&edges, &remaining)
                    .into_iter()
                    .map(|n| nodes[n].label.clone())
                    .collect(),
            });
        }
        for &n in &step {
            remaining.remove(&n);
            for &t in &edges[n] {
                in_degree[t] -= 1;
            }
        }
        steps.push(step);
    }
    Ok(Steps(steps))
}

/// `edges[a]` holds every node that `a` must be locked before.
fn edges(nodes: &[OrderNode<'_>]) -> Vec<BTreeSet<usize>> {
    nodes
        .iter()
        .map(|from| {
            let mut targets = BTreeSet::new();
            for wanted in from.locks_before {
                for (i, to) in nodes.iter().enumerate() {
                    let release_matches = to.release.is_none_or(|r| r == wanted.release);
                    if to.job_name == wanted.job_name && release_matches {
                        targets.insert(i);
                    }
                }
            }
            targets
        })
        .collect()
}

/// A cycle among `remaining`, where every node has an incoming edge from another remaining
/// node: walking predecessors backwards must revisit a node.
fn find_cycle(edges: &[BTreeSet<usize>], remaining: &BTreeSet<usize>) -> Vec<usize> {
    let predecessor = |n: usize| {
        remaining
            .iter()
            .copied()
            .find(|&p| edges[p].contains(&n))
            .expect("every remaining node has a remaining predecessor")
    };
    let start = *remaining.iter().next().expect("remaining is not empty");
    let mut path = vec![start];
    let mut current = start;
    loop {
        current = predecessor(current);
        if let Some(pos) = path.iter().position(|&n| n == current) {
            // Each node of `path` is locked before the one preceding it, so the cycle read
            // forwards is `current` followed by `path[pos..]` reversed, which ends in `current`.
            return std::iter::once(current)
                .chain(path[pos..].iter().rev().copied())
                .collect();
        }
        path.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(job: &str, release: &str) -> LockBefore {
        LockBefore {
            job_name: job.into(),
            release: release.into(),
        }
    }

    fn node<'a>(
        name: &'a str,
        release: Option<&'a str>,
        before: &'a [LockBefore],
    ) -> OrderNode<'a> {
        OrderNode {
            label: name.to_string(),
            job_name: name,
            release,
            locks_before: before,
        }
    }

    #[test]
    fn jobs_without_dependencies_share_one_step() {
        let nodes = [
            node("a", None, &[]),
            node("b", None, &[]),
            node("c", None, &[]),
        ];
        assert_eq!(order(&nodes).unwrap(), Steps(vec![vec![0, 1, 2]]));
    }

    #[test]
    fn a_chain_makes_one_step_per_job_and_unlock_reverses_it() {
        let a_before = [lb("b", "r")];
        let b_before = [lb("c", "r")];
        let nodes = [
            node("c", Some("r"), &[]),
            node("b", Some("r"), &b_before),
            node("a", Some("r"), &a_before),
        ];
        let steps = order(&nodes).unwrap();
        assert_eq!(steps, Steps(vec![vec![2], vec![1], vec![0]]));
        let lock: Vec<_> = steps.lock_order().collect();
        assert_eq!(lock, [[2], [1], [0]]);
        let unlock: Vec<_> = steps.unlock_order().collect();
        assert_eq!(unlock, [[0], [1], [2]]);
    }

    #[test]
    fn layers_are_kahn_layers() {
        // a before c, b before c, c before d; e free.
        let ab = [lb("c", "r")];
        let c = [lb("d", "r")];
        let nodes = [
            node("a", None, &ab),
            node("b", None, &ab),
            node("c", None, &c),
            node("d", None, &[]),
            node("e", None, &[]),
        ];
        assert_eq!(
            order(&nodes).unwrap(),
            Steps(vec![vec![0, 1, 4], vec![2], vec![3]])
        );
    }

    #[test]
    fn a_missing_target_is_ignored() {
        let before = [lb("not-deployed", "r")];
        let nodes = [node("a", None, &before), node("b", None, &[])];
        assert_eq!(order(&nodes).unwrap(), Steps(vec![vec![0, 1]]));
    }

    #[test]
    fn an_edge_reaches_every_instance_of_the_target_job() {
        let before = [lb("db", "r")];
        let nodes = [
            OrderNode {
                label: "db/0 db".into(),
                ..node("db", None, &[])
            },
            node("api", None, &before),
            OrderNode {
                label: "db/1 db".into(),
                ..node("db", None, &[])
            },
        ];
        assert_eq!(order(&nodes).unwrap(), Steps(vec![vec![1], vec![0, 2]]));
    }

    #[test]
    fn a_known_release_must_match() {
        let before = [lb("db", "other-release")];
        let nodes = [node("api", None, &before), node("db", Some("mine"), &[])];
        assert_eq!(order(&nodes).unwrap(), Steps(vec![vec![0, 1]]));
        let nodes = [
            node("api", None, &before),
            node("db", Some("other-release"), &[]),
        ];
        assert_eq!(order(&nodes).unwrap(), Steps(vec![vec![0], vec![1]]));
    }

    #[test]
    fn a_cycle_is_named_in_full_and_in_order() {
        let a = [lb("b", "r")];
        let b = [lb("c", "r")];
        let c = [lb("a", "r")];
        let nodes = [
            node("free", None, &[]),
            node("a", None, &a),
            node("b", None, &b),
            node("c", None, &c),
        ];
        let err = order(&nodes).unwrap_err();
        assert_eq!(err.cycle, vec!["a", "b", "c", "a"]);
        assert_eq!(
            err.to_string(),
            "the lock order is cyclic: a -> b -> c -> a (fix the jobs' metadata; nothing was locked)"
        );
    }

    #[test]
    fn a_cycle_behind_a_tail_names_only_the_cycle() {
        // t -> a -> b -> a: t is not part of the cycle.
        let t = [lb("a", "r")];
        let a = [lb("b", "r")];
        let b = [lb("a", "r")];
        let nodes = [
            node("t", None, &t),
            node("a", None, &a),
            node("b", None, &b),
        ];
        let err = order(&nodes).unwrap_err();
        assert_eq!(err.cycle, vec!["a", "b", "a"]);
    }

    #[test]
    fn a_job_locked_before_itself_is_a_cycle() {
        let a = [lb("a", "r")];
        let nodes = [node("a", None, &a)];
        assert_eq!(order(&nodes).unwrap_err().cycle, vec!["a", "a"]);
    }
}
