//! recall@k of the vector store, against exact search over the canary's own
//! records.
//!
//! The probe collection may also hold records the canary no longer knows:
//! those of an earlier run that ended without its cleanup. Their ids carry
//! another run's id, so they are told apart and left out on both sides: if
//! the store's answer is right, its records of this run are exactly the
//! nearest records of this run, however many earlier ones it placed among
//! them. So recall is judged over the answer's records of this run only: of
//! those `m`, how many are among the `m` nearest known records by exact
//! search. A record of this run that the canary no longer knows (deleted by
//! its own trim) counts as a miss: the store should not have returned it.

use std::collections::HashMap;

use crate::cache::Embedding;

/// Squared Euclidean distance: Chroma's default `l2` space.
fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Exact distances within this of the m-th nearest count as a tie.
const TIE: f32 = 1e-5;

/// The recall of `answer` (the store's ids, nearest first) for `query`, given
/// the records this run knows and the prefix of this run's ids; `None` when
/// the answer holds no record of this run, so there is nothing to judge.
pub(crate) fn recall(
    query: &[f32],
    answer: &[String],
    known: &[(String, Embedding)],
    run_prefix: &str,
) -> Option<f64> {
    let ours: Vec<&String> = answer
        .iter()
        .filter(|id| id.starts_with(run_prefix))
        .collect();
    if ours.is_empty() || known.is_empty() {
        return None;
    }
    let exact: HashMap<&str, f32> = known
        .iter()
        .filter(|(_, vector)| vector.len() == query.len())
        .map(|(id, vector)| (id.as_str(), squared_l2(query, vector)))
        .collect();
    let mut sorted: Vec<f32> = exact.values().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let m = ours.len().min(sorted.len());
    let bound = *sorted.get(m.checked_sub(1)?)? + TIE;
    let correct = ours
        .iter()
        .filter(|id| exact.get(id.as_str()).is_some_and(|d| *d <= bound))
        .count();
    Some(correct as f64 / ours.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(points: &[(&str, [f32; 2])]) -> Vec<(String, Embedding)> {
        points
            .iter()
            .map(|(id, v)| ((*id).to_owned(), Embedding::from(v.as_slice())))
            .collect()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    const POINTS: [(&str, [f32; 2]); 4] = [
        ("r1-a", [0.0, 0.0]),
        ("r1-b", [1.0, 0.0]),
        ("r1-c", [2.0, 0.0]),
        ("r1-d", [3.0, 0.0]),
    ];

    #[test]
    fn the_exact_answer_has_recall_one() {
        let known = known(&POINTS);
        let answer = ids(&["r1-a", "r1-b"]);
        assert_eq!(recall(&[0.1, 0.0], &answer, &known, "r1-"), Some(1.0));
    }

    #[test]
    fn a_wrong_neighbour_costs_its_share() {
        let known = known(&POINTS);
        let answer = ids(&["r1-a", "r1-d"]);
        assert_eq!(recall(&[0.1, 0.0], &answer, &known, "r1-"), Some(0.5));
    }

    #[test]
    fn records_of_earlier_runs_are_neither_hits_nor_misses() {
        let known = known(&POINTS);
        // An earlier run's record was nearer: the store rightly put it first
        // and returned only one of ours, the nearest of ours.
        let answer = ids(&["r0-x", "r1-a"]);
        assert_eq!(recall(&[0.1, 0.0], &answer, &known, "r1-"), Some(1.0));
        assert_eq!(recall(&[0.1, 0.0], &ids(&["r0-x"]), &known, "r1-"), None);
    }

    #[test]
    fn a_trimmed_record_of_this_run_is_a_miss() {
        let known = known(&POINTS);
        let answer = ids(&["r1-gone", "r1-a"]);
        assert_eq!(recall(&[0.1, 0.0], &answer, &known, "r1-"), Some(0.5));
    }

    #[test]
    fn ties_at_the_boundary_count_either_way() {
        let known = known(&[
            ("r1-a", [1.0, 0.0]),
            ("r1-b", [-1.0, 0.0]),
            ("r1-c", [5.0, 0.0]),
        ]);
        assert_eq!(
            recall(&[0.0, 0.0], &ids(&["r1-b"]), &known, "r1-"),
            Some(1.0)
        );
        assert_eq!(
            recall(&[0.0, 0.0], &ids(&["r1-a"]), &known, "r1-"),
            Some(1.0)
        );
        assert_eq!(
            recall(&[0.0, 0.0], &ids(&["r1-c"]), &known, "r1-"),
            Some(0.0)
        );
    }

    #[test]
    fn nothing_known_is_nothing_to_judge() {
        assert_eq!(recall(&[0.0, 0.0], &ids(&["r1-a"]), &[], "r1-"), None);
    }
}
