"""The test tier (see tests/conftest.py): what makes a test end to end (`e2e`)."""

from __future__ import annotations

# fixtures that start the RPC farm, compile an artifact or measure a predictor on the farm
END_TO_END_FIXTURES = frozenset({"host_farm", "emulated_farm", "host_artifact", "aarch64_artifact",
                                 "artifact_copy", "segformer_b0_predictor",
                                 "pipeline_run"})

# file -> test functions (all their parameters), measured with --durations on 2 cores
END_TO_END_TESTS = {
    # the first of these to run pays about a minute of TVM's first design space
    "test_transfer.py": {"test_a_trace_replays_on_other_extents_and_computes_the_same",
                         "test_kernels_named_after_other_variables_share_a_structure_and_replay",
                         "test_a_trace_of_another_structure_is_skipped_not_raised",
                         "test_the_numeric_check_sees_a_kernel_that_computes_something_else"},
    "test_farm.py": {"test_farm_processes_die_with_a_sigkilled_parent",
                     "test_serve_prints_its_address_registers_and_stops_every_child_on_sigterm",
                     "test_any_command_stops_its_embedded_farm_on_sigterm"},
    "test_compile_rewrites.py": {"test_decoder_rewrite_is_exact_and_saves_flops",
                                 "test_compile_rewrites_only_when_asked_and_records_it"},
    "test_compile_passes.py": {"test_fast_math_replaces_scalar_erf_calls_and_keeps_the_reference",
                               "test_fast_math_keeps_the_reference_of_the_tiny_models",
                               "test_fast_math_is_recorded_in_the_manifest_and_can_be_turned_off"},
    "test_device_database.py": {"test_two_processes_writing_at_once_lose_no_record"},
    "test_compile.py": {"test_the_prepack_benchmark_pairs_each_packed_kernel_with_its_plain_twin"},
    "test_step_cost_bench.py": {"test_the_step_cost_bench_times_every_step_of_the_real_search"},
    "test_gemm_peak_bench.py": {"test_the_peak_is_the_best_of_three_engines_timed_on_one_matmul"},
    "test_compile_arm.py": {"test_android_arm64_takes_the_same_graph_passes"},
    "test_models.py": {"test_torch_export_program_round_trips"},
    "test_prune_efficientvit.py": {"test_a_tiny_efficientvit_run_meets_its_budget",
                                   "test_efficientvit_seg_b0_masked_shrunk_and_described"},
    "test_prune_run.py": {
        "test_torchrun_data_parallel_on_two_gloo_processes",
        "test_shared_plain_training_gives_what_the_run_own_training_gives",
        "test_interrupted_run_resumes_from_its_checkpoint_through_the_cli",
        "test_threshold_mask_and_hard_signal_still_run_and_old_checkpoints_resume_as_they_ran",
        "test_dense_reference_keeps_every_unit_and_its_weights_start_a_pruning_run",
        "test_bilevel_search_itself_lands_just_under_the_budget",
        "test_the_neumann_implicit_gradient_is_a_run_option",
        "test_one_weight_decay_reaches_every_phase_of_every_method_and_is_recorded",
        "test_the_backbone_starts_from_timms_weights_only_when_they_are_in_the_local_cache",
        "test_baselines_meet_the_budget",
        "test_outer_batch_size_and_period_are_honoured_saved_and_fixed_on_resume",
        "test_a_run_on_synthetic_hard_has_its_forty_classes",
    },
}
