//! The behaviour both blob backends owe, written once and run on each: the
//! local filesystem in a temporary directory, and S3 on the SeaweedFS that
//! `scripts/seaweed.sh` starts (every test under a fresh prefix).
//!
//! Without `BERTH_TEST_S3_URL` the S3 tests fail rather than pass unseen;
//! `BERTH_TEST_S3=skip` skips them on purpose.

mod blobs;
mod harness;
mod payloads;

/// Every case becomes `local::<case>` and `s3::<case>`, so a failure names
/// the behaviour and the backend.
macro_rules! on_both_backends {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$module::$case(crate::harness::Backend::local()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::harness::Backend::s3() {
                        crate::$module::$case(backend).await;
                    }
                }
            )*
        }
    };
}

on_both_backends! {
    blobs::a_small_blob_round_trips,
    blobs::a_large_blob_round_trips_through_multipart,
    blobs::nothing_is_visible_before_commit,
    blobs::a_dropped_writer_leaves_nothing,
    blobs::create_only_refuses_a_second_create,
    blobs::concurrent_writers_of_different_keys,
    blobs::a_large_blob_reads_as_a_stream_of_chunks,
    blobs::ranges_read_a_slice,
    blobs::missing_blobs_read_as_none_and_delete_quietly,
    blobs::delete_prefix_removes_only_what_is_under_it,
    blobs::list_reports_keys_sizes_and_times,
    blobs::copy_duplicates_a_blob,
    payloads::payloads_round_trip_once_committed,
    payloads::payload_epochs_are_read_separately,
    payloads::removing_a_task_removes_every_epoch,
}
