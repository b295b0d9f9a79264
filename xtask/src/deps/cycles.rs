//! Cycles in a directed graph: one per edge that closes one (strongly connected components,
//! Tarjan), each the shortest way round.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One cycle through each strongly connected component with more than one node (Tarjan), each
/// as a node list whose last element repeats the first.
pub fn cycles<'a, N: Ord + Clone + 'a>(
    nodes: &[&'a N],
    next: impl Fn(&N) -> Vec<&'a N>,
) -> Vec<Vec<N>> {
    struct State<'a, N> {
        index: BTreeMap<&'a N, usize>,
        low: BTreeMap<&'a N, usize>,
        stack: Vec<&'a N>,
        on_stack: BTreeSet<&'a N>,
        components: Vec<Vec<&'a N>>,
    }
    fn visit<'a, N: Ord>(n: &'a N, next: &dyn Fn(&N) -> Vec<&'a N>, s: &mut State<'a, N>) {
        let i = s.index.len();
        s.index.insert(n, i);
        s.low.insert(n, i);
        s.stack.push(n);
        s.on_stack.insert(n);
        for m in next(n) {
            if !s.index.contains_key(m) {
                visit(m, next, s);
                let low = s.low[n].min(s.low[m]);
                s.low.insert(n, low);
            } else if s.on_stack.contains(m) {
                let low = s.low[n].min(s.index[m]);
                s.low.insert(n, low);
            }
        }
        if s.low[n] == s.index[n] {
            let mut component = Vec::new();
            while let Some(m) = s.stack.pop() {
                s.on_stack.remove(m);
                component.push(m);
                if m == n {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(*n) {
            visit(*n, &next, &mut s);
        }
    }
    let mut out = Vec::new();
    for component in s.components.iter().filter(|c| c.len() > 1) {
        let inside: BTreeSet<&N> = component.iter().copied().collect();
        // Every edge inside the component closes a cycle: name each edge in at least one,
        // the shortest way back from its end to its start.
        let mut covered: BTreeSet<(&N, &N)> = BTreeSet::new();
        for &from in &inside {
            for to in next(from) {
                if !inside.contains(to) || covered.contains(&(from, to)) {
                    continue;
                }
                let mut cycle = vec![from];
                cycle.extend(shortest(to, from, &inside, &next));
                for pair in cycle.windows(2) {
                    covered.insert((pair[0], pair[1]));
                }
                out.push(cycle.into_iter().cloned().collect());
            }
        }
    }
    out
}

/// The shortest path from `start` to `end` (both included) through `inside` (breadth first);
/// there is one, both being in a strongly connected component.
fn shortest<'a, N: Ord>(
    start: &'a N,
    end: &'a N,
    inside: &BTreeSet<&'a N>,
    next: &impl Fn(&N) -> Vec<&'a N>,
) -> Vec<&'a N> {
    let mut back: BTreeMap<&N, &N> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        if n == end {
            break;
        }
        for m in next(n) {
            if inside.contains(m) && m != start && !back.contains_key(m) {
                back.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    let mut path = vec![end];
    let mut at = end;
    while at != start {
        at = back[at];
        path.push(at);
    }
    path.reverse();
    path
}
