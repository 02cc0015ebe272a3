//! The study's generated tasks: answers follow their definitions, and the held-out splits
//! share no item with the training splits.

#[path = "../examples/gmt_study/data.rs"]
#[allow(dead_code)]
mod data;

use std::collections::HashSet;

use data::{ANSWER_START, BASE, DIGITS, EQUALS, SEQ_LEN, TARGET, Task};

fn operands(tokens: &[usize]) -> Vec<usize> {
    tokens[2..2 + DIGITS].to_vec()
}

#[test]
fn answers_follow_the_task_definitions() {
    for (tasks, n) in [(BASE, 400), (TARGET, 400)] {
        for problem in data::split(tasks, false, n, 7) {
            let t = &problem.tokens;
            assert_eq!(t.len(), SEQ_LEN);
            assert_eq!(t[ANSWER_START - 1], EQUALS);
            let x = operands(t);
            let answer = &t[ANSWER_START..];
            let task = match t[1] {
                data::REVERSE => Task::Reverse,
                data::INCREMENT => Task::Increment,
                data::REVERSE_INCREMENT => Task::ReverseIncrement,
                other => panic!("unknown marker {other}"),
            };
            let expected: Vec<usize> = (0..DIGITS)
                .map(|i| match task {
                    Task::Reverse => x[DIGITS - 1 - i],
                    Task::Increment => (x[i] + 1) % 10,
                    Task::ReverseIncrement => (x[DIGITS - 1 - i] + 1) % 10,
                })
                .collect();
            assert_eq!(answer, expected.as_slice(), "{task:?} {x:?}");
        }
    }
}

#[test]
fn test_splits_share_no_item_with_training() {
    for tasks in [BASE, TARGET] {
        let train: HashSet<Vec<usize>> = data::split(tasks, false, 5000, 1)
            .into_iter()
            .map(|p| operands(&p.tokens))
            .collect();
        let test: Vec<Vec<usize>> = data::split(tasks, true, 1000, 2)
            .into_iter()
            .map(|p| operands(&p.tokens))
            .collect();
        assert_eq!(test.len(), 1000);
        assert!(
            test.iter().all(|x| !train.contains(x)),
            "a test item appears in training"
        );
        // Other seeds draw other training sets, still disjoint from the test split.
        let other: HashSet<Vec<usize>> = data::split(tasks, false, 5000, 99)
            .into_iter()
            .map(|p| operands(&p.tokens))
            .collect();
        assert_ne!(train, other);
        assert!(test.iter().all(|x| !other.contains(x)));
    }
}
