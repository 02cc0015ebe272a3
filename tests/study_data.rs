//! The study's generated tasks: answers follow their definitions, the train, dev and test
//! splits share no item, and the fine-tuning draw has exactly the asked label noise and
//! digit restriction (in the restricted places only).

use std::collections::HashSet;

use burn_gmt_lab::data::{
    self, ANSWER_START, BASE, DIGITS, Draw, EQUALS, NONE, SEQ_LEN, Split, TARGET, Task,
};

/// The task a problem asks, from its instruction words.
fn task_of(tokens: &[usize]) -> Task {
    match (tokens[1], tokens[2]) {
        (data::REVERSE, NONE) => Task::Reverse,
        (data::INCREMENT, NONE) => Task::Increment,
        (data::ROTATE, NONE) => Task::Rotate,
        (data::REVERSE, data::ROTATE) => Task::ReverseRotate,
        (data::ROTATE, data::REVERSE) => Task::RotateReverse,
        (data::ROTATE, data::INCREMENT) => Task::RotateIncrement,
        (data::INCREMENT, data::ROTATE) => Task::IncrementRotate,
        (data::REVERSE, data::INCREMENT) => Task::ReverseIncrement,
        other => panic!("unknown instruction {other:?}"),
    }
}

/// The answer written out from each task's definition, independently of `Task::answer`.
fn expected(task: Task, x: &[usize]) -> Vec<usize> {
    (0..DIGITS)
        .map(|i| match task {
            Task::Reverse => x[DIGITS - 1 - i],
            Task::Increment => (x[i] + 1) % 10,
            Task::Rotate => x[(i + 1) % DIGITS],
            // Reverse, then rotate left: place i takes the reversed sequence's place i + 1.
            Task::ReverseRotate => x[DIGITS - 1 - (i + 1) % DIGITS],
            // Rotate left, then reverse: place i takes the rotated sequence's place 5 - i.
            Task::RotateReverse => x[(DIGITS - i) % DIGITS],
            Task::RotateIncrement | Task::IncrementRotate => (x[(i + 1) % DIGITS] + 1) % 10,
            Task::ReverseIncrement => (x[DIGITS - 1 - i] + 1) % 10,
        })
        .collect()
}

#[test]
fn answers_follow_the_task_definitions() {
    for tasks in [BASE, TARGET] {
        for split in [Split::Train, Split::Dev, Split::Test] {
            for problem in Draw::clean(tasks, split, 300, 7).problems() {
                let t = &problem.tokens;
                assert_eq!(t.len(), SEQ_LEN);
                assert_eq!(t[ANSWER_START - 1], EQUALS);
                let task = task_of(t);
                assert_eq!(
                    &t[ANSWER_START..],
                    expected(task, problem.digits()).as_slice(),
                    "{task:?} {:?}",
                    problem.digits()
                );
            }
        }
    }
}

#[test]
fn splits_share_no_item() {
    for tasks in [BASE, TARGET] {
        let draw = |split, count, seed| -> Vec<Vec<usize>> {
            Draw::clean(tasks, split, count, seed)
                .problems()
                .iter()
                .map(|p| p.digits().to_vec())
                .collect()
        };
        let train: HashSet<Vec<usize>> = draw(Split::Train, 5000, 1).into_iter().collect();
        let dev = draw(Split::Dev, 500, 3);
        let test = draw(Split::Test, 1000, 2);
        assert_eq!((dev.len(), test.len()), (500, 1000));
        assert!(
            dev.iter().all(|x| !train.contains(x)),
            "a dev item in training"
        );
        assert!(
            test.iter().all(|x| !train.contains(x)),
            "a test item in training"
        );
        assert!(test.iter().all(|x| !dev.contains(x)), "a test item in dev");
        // Another seed draws another training set, still disjoint from the held-out splits.
        let other: HashSet<Vec<usize>> = draw(Split::Train, 5000, 99).into_iter().collect();
        assert_ne!(train, other);
        assert!(test.iter().all(|x| !other.contains(x)));
    }
}

#[test]
fn fine_tuning_draw_has_the_asked_noise_and_digits() {
    for (count, noise, limit, restricted) in [(256, 0.35, 8, 3), (100, 0.3, 5, 6), (64, 0.0, 10, 0)]
    {
        let problems = Draw {
            tasks: TARGET,
            split: Split::Train,
            count,
            digit_limit: limit,
            restricted,
            noise,
            seed: 11,
        }
        .problems();
        assert_eq!(problems.len(), count);
        let wrong = problems
            .iter()
            .filter(|p| p.tokens[ANSWER_START..] != *expected(task_of(&p.tokens), p.digits()))
            .count();
        assert_eq!(
            wrong,
            (noise * count as f64).round() as usize,
            "noise {noise}"
        );
        assert!(
            problems
                .iter()
                .all(|p| p.digits()[..restricted].iter().all(|&d| d < limit)),
            "the first {restricted} digits below {limit}"
        );
        if restricted < DIGITS && limit < 10 {
            assert!(
                problems
                    .iter()
                    .any(|p| p.digits()[restricted..].iter().any(|&d| d >= limit)),
                "the other places take every digit"
            );
        }
        let distinct: HashSet<Vec<usize>> = problems.iter().map(|p| p.digits().to_vec()).collect();
        assert_eq!(distinct.len(), count, "distinct inputs");
    }
}

/// The target is new to pre-training, but made of known parts: no pre-training skill computes
/// the same function (under any instruction), and each of its two words appears in pre-training
/// in the same place of the instruction.
#[test]
fn target_is_a_composition_pre_training_never_shows() {
    let target = TARGET[0];
    let items = Draw::clean(TARGET, Split::Test, 200, 5).problems();
    for &skill in BASE {
        assert!(
            items
                .iter()
                .any(|p| expected(skill, p.digits()) != expected(target, p.digits())),
            "{skill:?} computes the target"
        );
    }
    let pre: Vec<[usize; 2]> = Draw::clean(BASE, Split::Train, 700, 4)
        .problems()
        .iter()
        .map(|p| [p.tokens[1], p.tokens[2]])
        .collect();
    let target_words = [items[0].tokens[1], items[0].tokens[2]];
    assert!(
        !pre.contains(&target_words),
        "the target's instruction in pre-training"
    );
    assert!(
        !pre.contains(&[target_words[1], target_words[0]]),
        "the target's words in the other order in pre-training"
    );
    for place in 0..2 {
        assert!(
            pre.iter().any(|w| w[place] == target_words[place]),
            "the target's word {place} never in that place in pre-training"
        );
    }
    // Seven skills, asked in turn.
    let distinct: HashSet<[usize; 2]> = pre.into_iter().collect();
    assert_eq!(distinct.len(), BASE.len());
}
