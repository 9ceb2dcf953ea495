//! Mixed precision: bf16 autocast on CUDA. tch's `autocast` turns autocast
//! on but leaves its dtype at libtorch's default for CUDA (fp16, which would
//! need a gradient scaler); the recipe wants bf16, so we set the dtype through
//! libtorch's own `at::autocast::set_autocast_dtype`.

mod ffi {
    extern "C" {
        // C++: void at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType);
        // both arguments are `enum class : int8_t`, passed as integers by the
        // Itanium C++ ABI exactly as C passes `int8_t`.
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        // C++: c10::ScalarType at::autocast::get_autocast_dtype(c10::DeviceType);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
    }
}

/// `c10::DeviceType::CUDA`.
const CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
pub const BFLOAT16: i8 = 15;

/// Makes CUDA autocast use bf16.
pub fn use_bf16_on_cuda() {
    // SAFETY: a plain setter of libtorch's global autocast dtype table, valid
    // at any time (no CUDA device needed); the signature is given above.
    unsafe { ffi::set_autocast_dtype(CUDA, BFLOAT16) }
}

/// The dtype CUDA autocast currently uses, as `c10::ScalarType`.
pub fn cuda_autocast_dtype() -> i8 {
    // SAFETY: a plain getter of the same table.
    unsafe { ffi::get_autocast_dtype(CUDA) }
}

/// Runs `f` under bf16 autocast when `enabled` and CUDA is available.
pub fn autocast_bf16<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    if enabled {
        use_bf16_on_cuda();
    }
    tch::autocast(enabled, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_autocast_dtype_becomes_bf16() {
        use_bf16_on_cuda();
        assert_eq!(cuda_autocast_dtype(), BFLOAT16);
    }
}
