#include "backends/cpu/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace fa4j::cpu {
namespace {

constexpr int kMaxThreads = 256;

using Body = std::function<void(int64_t, int)>;

struct Job {
    const Body* body;
    int64_t num_tasks;
    std::atomic<int64_t> next{0};
    std::mutex error_mutex;
    std::exception_ptr error;
};

void work_on(Job& job, int worker) {
    for (;;) {
        const int64_t task = job.next.fetch_add(1, std::memory_order_relaxed);
        if (task >= job.num_tasks) return;
        try {
            (*job.body)(task, worker);
        } catch (...) {
            std::lock_guard<std::mutex> lock(job.error_mutex);
            if (!job.error) job.error = std::current_exception();
            // Later tasks would only produce results nobody reads; let every thread run dry.
            job.next.store(job.num_tasks, std::memory_order_relaxed);
        }
    }
}

class ThreadPool {
public:
    static ThreadPool& instance() {
        static ThreadPool pool;
        return pool;
    }

    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }

    void run(int num_threads, int64_t num_tasks, const Body& body) {
        std::lock_guard<std::mutex> serial(run_mutex_);
        const int helpers = grow_to(num_threads - 1);
        Job job;
        job.body = &body;
        job.num_tasks = num_tasks;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &job;
            helpers_ = helpers;
            pending_ = helpers;
            ++generation_;
        }
        wake_.notify_all();
        work_on(job, 0);
        {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return pending_ == 0; });
            job_ = nullptr;
        }
        if (job.error) std::rethrow_exception(job.error);
    }

private:
    ThreadPool() = default;

    // Starts workers until `count` exist (or the system refuses more); returns how many exist.
    int grow_to(int count) {
        while (static_cast<int>(workers_.size()) < count) {
            const int index = static_cast<int>(workers_.size()) + 1;  // worker 0 is the calling thread
            try {
                workers_.emplace_back([this, index] { worker_loop(index); });
            } catch (const std::system_error&) {
                break;  // fewer threads is slower, not wrong
            }
        }
        return std::min(count, static_cast<int>(workers_.size()));
    }

    void worker_loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            Job* job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                // A new generation is only posted once every helper of the previous one reported back, so a
                // worker that wakes late can never miss a job that counts on it.
                if (index > helpers_) continue;
                job = job_;
            }
            work_on(*job, index);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (--pending_ == 0) done_.notify_one();
            }
        }
    }

    std::mutex run_mutex_;  // one job at a time: the workers are shared by every caller
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    std::vector<std::thread> workers_;
    Job* job_ = nullptr;
    uint64_t generation_ = 0;
    int helpers_ = 0;
    int pending_ = 0;
    bool stop_ = false;
};

int env_num_threads() {
    const char* text = std::getenv("FA4J_NUM_THREADS");
    if (text == nullptr || *text == '\0') return 0;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*end != '\0' || value <= 0) return 0;  // not a positive integer: ignore rather than guess
    return static_cast<int>(std::min<long>(value, kMaxThreads));
}

// The thread count of calls that ask for none: FA4J_NUM_THREADS, else the hardware threads. Both are facts of
// the process, read at the first such call: asking again on every call (an environment lookup and a read of
// /sys by hardware_concurrency) cost ~6 us, several times the work of a small call.
int default_num_threads() {
    static const int threads = [] {
        int t = env_num_threads();
        if (t <= 0) t = static_cast<int>(std::thread::hardware_concurrency());
        return std::clamp(t, 1, kMaxThreads);
    }();
    return threads;
}

}  // namespace

int resolve_num_threads(int requested) {
    return requested > 0 ? std::min(requested, kMaxThreads) : default_num_threads();
}

void parallel_for(int num_threads, int64_t num_tasks, const Body& body) {
    if (num_tasks <= 0) return;
    const int threads = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), num_tasks));
    if (threads == 1) {
        // No hand-off needed: running inline also keeps single-threaded callers off the shared pool.
        for (int64_t task = 0; task < num_tasks; ++task) body(task, 0);
        return;
    }
    ThreadPool::instance().run(threads, num_tasks, body);
}

}  // namespace fa4j::cpu
