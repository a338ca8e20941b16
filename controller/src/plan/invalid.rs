//! Why a spec was refused: every problem found, each naming its field.

use std::fmt;

/// One field that is wrong, or that asks for something faultline does not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The path under `spec` (`mode`, `delay.latency`, `stressors.cpu.load`).
    pub field: String,
    pub problem: String,
    /// Valid for Chaos Mesh but not supported by faultline.
    pub unsupported: bool,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.{}: {}", self.field, self.problem)
    }
}

/// Every problem of a spec; the spec is refused as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    pub problems: Vec<FieldProblem>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl InvalidSpec {
    pub fn invalid(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.push(field.into(), problem.into(), false);
    }

    pub fn unsupported(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.push(field.into(), problem.into(), true);
    }

    fn push(&mut self, field: String, problem: String, unsupported: bool) {
        self.problems.push(FieldProblem {
            field,
            problem,
            unsupported,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The condition reason: `Unsupported` when only unsupported fields are the problem.
    pub fn reason(&self) -> &'static str {
        if self.problems.iter().all(|p| p.unsupported) {
            "Unsupported"
        } else {
            "Invalid"
        }
    }

    /// Ok(value) when no problem was found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, InvalidSpec> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => Err(self),
        }
    }
}
