//! cgqos: quality of service for Linux sessions through cgroup v2.
