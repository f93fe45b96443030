// A process-wide pool of persistent worker threads for the CPU backend. Attention calls are coarse
// (thousands of tiles), so a shared task counter is all the scheduling they need; keeping the threads
// alive avoids paying thread creation on every call, which dominates small problems.
#pragma once

#include <cstdint>
#include <functional>

namespace fa4j::cpu {

// Threads a call runs on: `requested` if positive, else the FA4J_NUM_THREADS environment variable if it
// holds a positive integer, else the number of hardware threads (both read once, at the first call that asks
// for neither). Capped so that a typo cannot spawn thousands of threads.
int resolve_num_threads(int requested);

// Runs body(task, worker) once for every task in [0, num_tasks), spread over at most `num_threads`
// threads of which the calling thread is one. `worker` lies in [0, num_threads) and is unique among the
// threads running concurrently, so it can index per-thread scratch. Tasks are handed out in increasing
// order to whichever thread is free, so put the longest tasks first. Returns when every task is done;
// if a task throws, the remaining tasks are skipped and the first exception is rethrown here.
// Calls from different threads are serialised; a body must not call parallel_for itself.
void parallel_for(int num_threads, int64_t num_tasks, const std::function<void(int64_t task, int worker)>& body);

}  // namespace fa4j::cpu
