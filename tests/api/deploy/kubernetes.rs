//! deploy/kubernetes: checked in the next step.
