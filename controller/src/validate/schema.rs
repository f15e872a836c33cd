//! Whether a new version can replace the one before it for the apps calling it: the same inputs
//! (names, datatypes, shapes at least as wide) and every output it had.

use edgefleet_shared::inference::TensorMetadata;

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| if *d < 0 { "N".to_owned() } else { d.to_string() }).collect();
    format!("[{}]", dims.join(","))
}

/// How `after` breaks callers of `before`, one sentence per tensor (empty: compatible). An
/// input must keep its datatype and rank, and accept every shape it accepted (a dimension
/// may become dynamic, not fixed or different); outputs must stay, with their datatype and
/// rank. New inputs break callers; new outputs do not.
pub fn incompatibilities(before: &[TensorMetadata], after: &[TensorMetadata], what: &str) -> Vec<String> {
    let mut found = Vec::new();
    for old in before {
        let Some(new) = after.iter().find(|t| t.name == old.name) else {
            found.push(format!("{what} {:?} is gone", old.name));
            continue;
        };
        let narrower = old.shape.len() != new.shape.len()
            || old.shape.iter().zip(&new.shape).any(|(o, n)| {
                let input = what == "input";
                // An input dimension may widen (fixed -> dynamic); an output's may change freely
                // in size but not in rank.
                input && *n >= 0 && o != n
            });
        if old.datatype != new.datatype || narrower {
            found.push(format!(
                "{what} {:?} was {} {}, is now {} {}",
                old.name,
                old.datatype,
                shape_text(&old.shape),
                new.datatype,
                shape_text(&new.shape)
            ));
        }
    }
    if what == "input" {
        for new in after.iter().filter(|t| !before.iter().any(|o| o.name == t.name)) {
            found.push(format!("input {:?} ({} {}) is new", new.name, new.datatype, shape_text(&new.shape)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use edgefleet_shared::inference::Datatype;

    use super::*;

    fn t(name: &str, datatype: Datatype, shape: &[i64]) -> TensorMetadata {
        TensorMetadata { name: name.into(), datatype, shape: shape.to_vec() }
    }

    #[test]
    fn the_same_schema_or_a_wider_one_is_compatible() {
        let v1 = [t("X", Datatype::Fp32, &[-1, 4])];
        assert!(incompatibilities(&v1, &v1, "input").is_empty());
        assert!(incompatibilities(&[t("X", Datatype::Fp32, &[1, 4])], &v1, "input").is_empty(), "1 -> N widens");
        let outputs = [t("label", Datatype::Int64, &[-1]), t("probabilities", Datatype::Fp32, &[-1, 3])];
        let more = [outputs[0].clone(), t("probabilities", Datatype::Fp32, &[-1, 4]), t("extra", Datatype::Fp32, &[1])];
        assert!(incompatibilities(&outputs, &more, "output").is_empty(), "new outputs and sizes break nobody");
    }

    #[test]
    fn every_break_is_named() {
        let v1 = [t("X", Datatype::Fp32, &[-1, 4])];
        assert_eq!(
            incompatibilities(&v1, &[t("X", Datatype::Fp32, &[-1, 5])], "input"),
            ["input \"X\" was FP32 [N,4], is now FP32 [N,5]"]
        );
        assert_eq!(
            incompatibilities(&v1, &[t("X", Datatype::Fp64, &[-1, 4])], "input"),
            ["input \"X\" was FP32 [N,4], is now FP64 [N,4]"]
        );
        assert_eq!(incompatibilities(&v1, &[t("X", Datatype::Fp32, &[1, 4])], "input").len(), 1, "N -> 1 narrows");
        assert_eq!(
            incompatibilities(&v1, &[t("input", Datatype::Fp32, &[-1, 4])], "input"),
            ["input \"X\" is gone", "input \"input\" (FP32 [N,4]) is new"]
        );
        let out = [t("label", Datatype::Int64, &[-1])];
        assert_eq!(incompatibilities(&out, &[], "output"), ["output \"label\" is gone"]);
        assert_eq!(incompatibilities(&out, &[t("label", Datatype::Int64, &[-1, 1])], "output").len(), 1);
    }
}
