//! The step job contract, as the job side sees it.
//!
//! A step becomes a job: `pipeline exec-step <workspace> <step-id>` reads the
//! step's `job.json`, runs the stage, moves its outputs into place, hashes
//! them and writes `result.json` atomically into the step's folder
//! ([`job`]). Any executor can run that command; the head process ingests the
//! result file into the store. Jobs never open the database.

pub mod confine;
pub mod job;
pub mod redact;
pub mod resources;
pub mod step;
