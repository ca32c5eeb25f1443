#pragma once
// What the Thrust backend's headers need before any Thrust header: the device system and the marker of
// functions that run on the device. The same sources compile under nvcc (CUDA device system) and under a
// host compiler (OpenMP device system, or the sequential CPP one without OpenMP), where device memory is
// host memory. Include this header first: Thrust reads THRUST_DEVICE_SYSTEM once.

// A host compiler cannot build Thrust's default CUDA system; pick a host one unless the build chose.
#if !defined(__CUDACC__) && !defined(THRUST_DEVICE_SYSTEM)
#if defined(_OPENMP)
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_OMP
#else
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_CPP
#endif
#endif

// Functors that Thrust runs on the device; a host compiler does not know __host__ __device__.
#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif
