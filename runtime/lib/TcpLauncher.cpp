//===- TcpLauncher.cpp - A context's ranks and groups over TCP ------------===//

#include "TcpLauncher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

using namespace tamoe_rt;

namespace {

//===----------------------------------------------------------------------===//
// Bytes
//===----------------------------------------------------------------------===//

void putU32(std::string &out, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    out.push_back(char((value >> (8 * i)) & 0xff));
}
void putU64(std::string &out, uint64_t value) {
  putU32(out, uint32_t(value));
  putU32(out, uint32_t(value >> 32));
}

/// Reads little-endian fields from a message, never past its end.
class Reader {
public:
  explicit Reader(const std::string &bytes) : bytes(bytes) {}
  bool u32(uint32_t &value) {
    if (bytes.size() - offset < 4)
      return false;
    value = 0;
    for (int i = 0; i < 4; ++i)
      value |= uint32_t(uint8_t(bytes[offset + i])) << (8 * i);
    offset += 4;
    return true;
  }
  bool u64(uint64_t &value) {
    uint32_t low, high;
    if (!u32(low) || !u32(high))
      return false;
    value = uint64_t(high) << 32 | low;
    return true;
  }
  bool text(size_t length, std::string &value) {
    if (bytes.size() - offset < length)
      return false;
    value = bytes.substr(offset, length);
    offset += length;
    return true;
  }
  bool atEnd() const { return offset == bytes.size(); }

private:
  const std::string &bytes;
  size_t offset = 0;
};

//===----------------------------------------------------------------------===//
// Sockets
//===----------------------------------------------------------------------===//

Status communication(std::string message) {
  return Status::error(TAMOE_RT_ERROR_COMMUNICATION, std::move(message));
}
Status timedOut(std::string message) {
  return Status::error(TAMOE_RT_ERROR_TIMEOUT, std::move(message));
}
/// `problem` with `context` before its message, its code kept.
Status within(const std::string &context, const Status &problem) {
  return Status::error(problem.code, context + problem.message);
}

std::string errnoText() { return std::strerror(errno); }

void closeSocket(int &fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

/// Milliseconds left until `deadline` (0 when past), for poll; rounded up,
/// so that poll does not return early and spin through the last one.
int millisecondsLeft(Clock::time_point deadline) {
  auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now())
          .count();
  return int(std::clamp<int64_t>(left, 0, 1000));
}

bool setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

/// A non-blocking listening socket on `port` (0: any), or -1 and `error`.
int listenOn(uint16_t port, std::string &error) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "socket: " + errnoText();
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(port);
  if (::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
      ::listen(fd, SOMAXCONN) != 0 || !setNonBlocking(fd)) {
    error = errnoText();
    closeSocket(fd);
    return -1;
  }
  return fd;
}

/// This end's IPv4 address and port of a socket, or with `peer` the other
/// end's; zeros when it has none.
sockaddr_in endpointOf(int fd, bool peer = false) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  auto *generic = reinterpret_cast<sockaddr *>(&address);
  if ((peer ? getpeername(fd, generic, &length)
            : getsockname(fd, generic, &length)) != 0)
    return sockaddr_in{};
  return address;
}

uint16_t portOf(int fd) { return ntohs(endpointOf(fd).sin_port); }

bool isLoopback(uint32_t networkOrder) {
  return ntohl(networkOrder) >> 24 == 127;
}

std::string ipText(uint32_t networkOrder) {
  char text[INET_ADDRSTRLEN] = "?";
  in_addr address{};
  address.s_addr = networkOrder;
  inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

/// A connected, non-blocking socket, low-latency (no Nagle delay on the
/// small messages of agreements).
void configure(int fd) {
  setNonBlocking(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Accepts a pending connection of a non-blocking listener: the socket
/// and the peer's IPv4 address (network order), or -1 and errno.
int acceptFrom(int listener, uint32_t &ip) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  int fd = ::accept4(listener, reinterpret_cast<sockaddr *>(&address), &length,
                     SOCK_CLOEXEC);
  if (fd >= 0) {
    configure(fd);
    ip = address.sin_addr.s_addr;
  }
  return fd;
}

/// Connects to ip:port (network-order ip) before `deadline`, retrying while
/// nobody listens yet (the peer may start later); the socket or -1 and the
/// last error.
int connectTo(uint32_t ip, uint16_t port, Clock::time_point deadline,
              std::string &error) {
  error = "no attempt";
  while (Clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = "socket: " + errnoText();
      return -1;
    }
    configure(fd);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = ip;
    address.sin_port = htons(port);
    int rc =
        ::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd waiting{fd, POLLOUT, 0};
      while (Clock::now() < deadline &&
             ::poll(&waiting, 1, millisecondsLeft(deadline)) == 0) {
      }
      // The deadline came during this attempt: an earlier attempt's error
      // (say, that nobody listens) says more than a time-out.
      if (!waiting.revents && error != "no attempt") {
        closeSocket(fd);
        return -1;
      }
      int soError = ETIMEDOUT;
      socklen_t length = sizeof soError;
      if (waiting.revents)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length);
      rc = soError == 0 ? 0 : -1;
      errno = soError;
    }
    // A connection to a port of this host that nobody listens on yet can
    // be made to itself (TCP's simultaneous open, when the kernel picks
    // that very port as the source): not the peer, so try again.
    if (rc == 0) {
      sockaddr_in self = endpointOf(fd), peer = endpointOf(fd, /*peer=*/true);
      if (self.sin_port != 0 && self.sin_port == peer.sin_port &&
          self.sin_addr.s_addr == peer.sin_addr.s_addr) {
        rc = -1;
        errno = ECONNREFUSED;
      }
    }
    if (rc == 0)
      return fd;
    error = errnoText();
    closeSocket(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

/// Writes all of `bytes` to a non-blocking socket before `deadline`;
/// Why not: COMMUNICATION, or TIMEOUT at the deadline.
Status writeAll(int fd, const std::string &bytes, Clock::time_point deadline) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n =
        ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return communication("the connection is closed (" + errnoText() + ")");
    if (Clock::now() >= deadline)
      return timedOut("timed out");
    pollfd waiting{fd, POLLOUT, 0};
    ::poll(&waiting, 1, millisecondsLeft(deadline));
  }
  return Status::success();
}

/// Reads exactly `length` bytes from a non-blocking socket before
/// `deadline`; why not ("closed after 3 of 20 bytes") as COMMUNICATION, or
/// TIMEOUT at the deadline.
Status readExact(int fd, size_t length, std::string &bytes,
                 Clock::time_point deadline) {
  bytes.assign(length, '\0');
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::recv(fd, bytes.data() + done, length - done, 0);
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n == 0)
      return communication(
          str("the connection closed after ", done, " of ", length, " bytes"));
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return communication("the connection failed (" + errnoText() + ")");
    if (Clock::now() >= deadline)
      return timedOut(str("timed out after ", done, " of ", length, " bytes"));
    pollfd waiting{fd, POLLIN, 0};
    ::poll(&waiting, 1, millisecondsLeft(deadline));
  }
  return Status::success();
}

/// A frame's header (tcp::kHeaderBytes of them), its fields not checked.
struct Header {
  uint32_t magic = 0, op = 0, length = 0;
};
Header decodeHeader(const std::string &bytes) {
  Header header;
  Reader reader(bytes);
  reader.u32(header.magic);
  reader.u32(header.op);
  reader.u32(header.length);
  return header;
}

/// The ranks in [from, to) without a socket yet, as "2, 5".
std::string unconnected(const std::vector<int> &sockets, int64_t from,
                        int64_t to) {
  std::string list;
  for (int64_t r = from; r < to; ++r)
    if (sockets[r] < 0)
      list += (list.empty() ? "" : ", ") + std::to_string(r);
  return list;
}

/// Reads one frame of `op` whose payload is at most `maxBytes`; what was
/// wrong with it, as readExact says it.
Status readFrame(int fd, uint32_t op, size_t maxBytes, std::string &payload,
                 Clock::time_point deadline) {
  std::string header;
  Status status = readExact(fd, tcp::kHeaderBytes, header, deadline);
  if (!status.ok())
    return status;
  Header got = decodeHeader(header);
  if (got.magic != tcp::kMagic)
    return communication(
        str("it is not a tamoe message (magic 0x", std::hex, got.magic, ")"));
  if (got.op != op)
    return communication(
        str("it is message ", got.op, " where ", op, " was expected"));
  if (got.length > maxBytes)
    return communication(str("it announces ", got.length,
                             " bytes where at most ", maxBytes,
                             " were expected"));
  return readExact(fd, got.length, payload, deadline);
}

/// A peer's text as this rank reports it: control bytes (a terminal's
/// escapes, a NUL that would cut the message) become '?'.
std::string printable(std::string text) {
  for (size_t i = 0; i < text.size(); ++i) {
    uint8_t c = uint8_t(text[i]);
    // C1 controls are U+0080-U+009F, C2 80 to C2 9F in UTF-8.
    if (c == 0xc2 && i + 1 < text.size() && uint8_t(text[i + 1]) >= 0x80 &&
        uint8_t(text[i + 1]) <= 0x9f)
      text.replace(i, 2, "?");
    else if (c < 0x20 || c == 0x7f)
      text[i] = '?';
  }
  return text;
}

/// Connections accepted on a listener, each read until it has sent its
/// greeting: a fixed number of bytes (a hello, a join). Anyone may connect,
/// so a connection is dropped, and counted with the first reason, when it
/// closes early, sends no full greeting within kGreetingSeconds, or is the
/// oldest of more than `cap` waiting at once; and when the process runs
/// out of file descriptors the listener rests instead of waking poll again
/// at once.
class Greetings {
public:
  static constexpr int kGreetingSeconds = 5;
  struct Greeting {
    int fd;
    uint32_t ip;
    std::string bytes;
  };

  Greetings(int listener, size_t bytes, size_t cap, const char *what)
      : listener(listener), bytes(bytes), cap(cap), what(what) {}
  ~Greetings() {
    for (Pending &p : pending)
      closeSocket(p.fd);
  }

  /// Waits until `deadline` (at most a second) for connections and bytes;
  /// the greetings completed meanwhile, whose sockets are the caller's.
  std::vector<Greeting> next(Clock::time_point deadline) {
    Clock::time_point wake = deadline;
    bool resting = Clock::now() < restUntil;
    if (resting)
      wake = std::min(wake, restUntil);
    for (const Pending &p : pending)
      wake = std::min(wake, p.since + std::chrono::seconds(kGreetingSeconds));
    std::vector<pollfd> fds{{resting ? -1 : listener, POLLIN, 0}};
    for (const Pending &p : pending)
      fds.push_back({p.fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), millisecondsLeft(wake));
    // Complete greetings leave first, so that making room for a new
    // connection never closes one that has said all it had to.
    std::vector<Greeting> complete = readPending();
    if (fds[0].revents & POLLIN)
      acceptQueued();
    return complete;
  }

  /// Closes a connection that will not join, for `why`.
  void drop(int &fd, uint32_t ip, const std::string &why) {
    if (dropped++ == 0)
      firstDropped = str(ipText(ip), ": ", why);
    closeSocket(fd);
  }

  /// "; closed 2 connection(s) that did not join (first ...)", or "".
  std::string note() const {
    std::string text = dropped ? str("; closed ", dropped,
                                     " connection(s) that did not join "
                                     "(first ",
                                     firstDropped, ")")
                               : "";
    if (!acceptError.empty())
      text += "; accepting connections failed: " + acceptError;
    return text;
  }

private:
  struct Pending {
    int fd;
    uint32_t ip;
    std::string bytes;
    Clock::time_point since;
  };

  /// Reads what the pending connections sent; the completed greetings.
  std::vector<Greeting> readPending() {
    std::vector<Greeting> complete;
    for (Pending &p : pending) {
      char buffer[64];
      size_t want = std::min(bytes - p.bytes.size(), sizeof buffer);
      ssize_t n = ::recv(p.fd, buffer, want, 0);
      if (n > 0)
        p.bytes.append(buffer, size_t(n));
      else if (n == 0 ||
               (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        drop(p.fd, p.ip,
             str("closed after ", p.bytes.size(), " of ", bytes,
                 " bytes of its ", what));
      if (p.fd >= 0 && p.bytes.size() == bytes) {
        complete.push_back({p.fd, p.ip, std::move(p.bytes)});
        p.fd = -1;
      } else if (p.fd >= 0 && Clock::now() - p.since >=
                                  std::chrono::seconds(kGreetingSeconds)) {
        drop(p.fd, p.ip,
             str("sent ", p.bytes.size(), " of ", bytes, " bytes of its ", what,
                 " in ", kGreetingSeconds, " s"));
      }
    }
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [](const Pending &p) { return p.fd < 0; }),
                  pending.end());
    return complete;
  }

  /// Accepts what the listener has queued (poll said it has). A connection
  /// accepted here is read (readPending) before it can be dropped to make
  /// room: a rank whose hello waits in the queue behind a flood of silent
  /// connections must not be closed unread. The rest wait in the queue.
  void acceptQueued() {
    uint32_t ip = 0;
    // The oldest pending connection was accepted in this call: unread.
    size_t accepted = 0;
    auto oldestUnread = [&] { return accepted >= pending.size(); };
    while (true) {
      if (pending.size() >= cap && oldestUnread())
        return;
      int fd = acceptFrom(listener, ip);
      if (fd >= 0) {
        if (pending.size() >= cap)
          dropOldest(str("closed with ", cap, " others waiting"));
        pending.push_back({fd, ip, "", Clock::now()});
        ++accepted;
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      // Linux says EMFILE at the limit even when nothing is queued: make
      // room only for a connection that is there.
      acceptError = errnoText();
      bool outOfDescriptors = errno == EMFILE || errno == ENFILE;
      pollfd queued{listener, POLLIN, 0};
      if (outOfDescriptors && !pending.empty() && !oldestUnread() &&
          ::poll(&queued, 1, 0) > 0)
        dropOldest("closed to make room: this process is out of file "
                   "descriptors");
      else // nothing to close, or another failure: do not spin on it
        restUntil = Clock::now() + std::chrono::milliseconds(50);
      return;
    }
  }

  void dropOldest(const std::string &why) {
    Pending &oldest = pending.front();
    drop(oldest.fd, oldest.ip, why);
    pending.erase(pending.begin());
  }

  int listener;
  size_t bytes, cap;
  const char *what;
  std::vector<Pending> pending;
  Clock::time_point restUntil{};
  int dropped = 0;
  std::string firstDropped, acceptError;
};

//===----------------------------------------------------------------------===//
// The environment
//===----------------------------------------------------------------------===//

/// An integer variable in [minimum, maximum]; "" or the failure's message.
std::string readInteger(const char *name, int64_t minimum, int64_t maximum,
                        int64_t &value, const char *range) {
  const char *text = nonEmptyEnv(name);
  if (!text)
    return str(name, " is not set: the tcp launcher needs torchrun's RANK, "
                     "WORLD_SIZE, MASTER_ADDR and MASTER_PORT");
  char *end = nullptr;
  errno = 0;
  long long parsed = std::strtoll(text, &end, 10);
  if (errno || end == text || *end || parsed < minimum || parsed > maximum)
    return str(name, "='", text, "' is not ", range);
  value = parsed;
  return "";
}

/// The port rank 0 listens on, and where it comes from (for messages):
/// TAMOE_RT_MASTER_PORT, or the port above MASTER_PORT. MASTER_PORT itself
/// is torch's: torchrun's agent serves its store there
/// (TORCHELASTIC_USE_AGENT_STORE), as does torch.distributed's rank 0
/// otherwise. "" or why not.
std::string rendezvousPort(int64_t masterPort, int64_t &port,
                           std::string &origin) {
  if (nonEmptyEnv("TAMOE_RT_MASTER_PORT")) {
    origin = "TAMOE_RT_MASTER_PORT";
    return readInteger("TAMOE_RT_MASTER_PORT", 1, 65535, port,
                       "a port in [1, 65535]");
  }
  origin = "MASTER_PORT + 1";
  if (masterPort == 65535)
    return "MASTER_PORT=65535 leaves no port above it for tamoe's "
           "rendezvous (MASTER_PORT itself is torch's store's): set "
           "TAMOE_RT_MASTER_PORT";
  port = masterPort + 1;
  return "";
}

/// MASTER_ADDR's IPv4 address (network order); "" or why not.
std::string resolve(const std::string &host, uint32_t &ip) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *found = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || !found)
    return str("MASTER_ADDR='", host,
               "' does not resolve to an IPv4 address: ", gai_strerror(rc));
  ip = reinterpret_cast<sockaddr_in *>(found->ai_addr)->sin_addr.s_addr;
  freeaddrinfo(found);
  return "";
}

} // namespace

std::string tcp::encodeHello(uint32_t rank, uint32_t worldSize, uint32_t port) {
  std::string out;
  for (uint32_t value : {kMagic, kVersion, rank, worldSize, port})
    putU32(out, value);
  return out;
}

std::string tcp::encodeFrame(uint32_t op, const std::string &payload) {
  std::string out;
  putU32(out, kMagic);
  putU32(out, op);
  putU32(out, uint32_t(payload.size()));
  return out + payload;
}

//===----------------------------------------------------------------------===//
// Rendezvous
//===----------------------------------------------------------------------===//

namespace {
/// The table's payload: status, message, session, then (ip, port) per
/// rank; the bound a worker reads it with.
size_t tableBytes(int64_t worldSize) {
  return 4 + 4 + tcp::kMaxMessageBytes + 8 + 8 * size_t(worldSize);
}
} // namespace

Status TcpLauncher::rendezvousAsRoot(int listener, const std::string &where,
                                     Clock::time_point deadline) {
  std::vector<uint32_t> ips(worldSize, 0), ports(worldSize, 0);
  ports[0] = portOf(listener);
  int64_t joined = 1;
  std::string fatal;
  // Tamoe ranks whose hello was wrong: they hear why, as the others do.
  std::vector<int> offenders;
  Greetings hellos(listener, tcp::kHelloBytes, size_t(worldSize) + 64, "hello");
  while (joined < worldSize && fatal.empty() && Clock::now() < deadline) {
    for (Greetings::Greeting &hello : hellos.next(deadline)) {
      Reader reader(hello.bytes);
      uint32_t magic = 0, version = 0, rank = 0, world = 0, port = 0;
      reader.u32(magic);
      reader.u32(version);
      reader.u32(rank);
      reader.u32(world);
      reader.u32(port);
      if (magic != tcp::kMagic) {
        hellos.drop(hello.fd, hello.ip,
                    str("not a tamoe hello (magic 0x", std::hex, magic, ")"));
        continue;
      }
      // A tamoe rank that is wrong fails the job: it would not join later.
      std::string wrong;
      if (version != tcp::kVersion)
        wrong = str("a rank at ", ipText(hello.ip), " speaks protocol version ",
                    version, ", rank 0 version ", tcp::kVersion,
                    " (different tamoe runtimes)");
      else if (world != uint32_t(worldSize))
        wrong = str("rank ", rank, " at ", ipText(hello.ip),
                    " has WORLD_SIZE=", world, ", rank 0 has ", worldSize);
      else if (rank < 1 || rank >= uint32_t(worldSize))
        wrong = str("a process at ", ipText(hello.ip), " says RANK=", rank,
                    ", outside [1, WORLD_SIZE=", worldSize, ")");
      else if (sockets[rank] >= 0)
        wrong = str("two processes say RANK=", rank, " (at ", ipText(ips[rank]),
                    " and ", ipText(hello.ip), ")");
      else if (port < 1 || port > 65535)
        wrong = str("rank ", rank, " listens on port ", port,
                    ", which is not a port");
      if (!wrong.empty()) {
        if (fatal.empty())
          fatal = wrong;
        offenders.push_back(hello.fd);
        continue;
      }
      sockets[rank] = hello.fd;
      ips[rank] = hello.ip;
      ports[rank] = port;
      ++joined;
    }
  }

  Status status;
  if (!fatal.empty()) {
    status = Status::error(TAMOE_RT_ERROR_MISMATCH,
                           "rendezvous at " + where + ": " + fatal);
  } else if (joined < worldSize) {
    std::string missing = unconnected(sockets, 1, worldSize);
    status =
        timedOut(str("rank(s) ", missing, " did not join the rendezvous at ",
                     where, " within ", timeout,
                     " s (not started, crashed, or a wrong MASTER_ADDR/"
                     "MASTER_PORT)",
                     hellos.note()));
  }

  // The table, or the failure alone, to every rank that joined.
  std::random_device entropy;
  uint64_t session = uint64_t(entropy()) << 32 ^ entropy() ^
                     uint64_t(Clock::now().time_since_epoch().count());
  auto tableFor = [&](int fd) {
    std::string payload;
    putU32(payload, uint32_t(status.code));
    std::string message = status.message.substr(0, tcp::kMaxMessageBytes);
    putU32(payload, uint32_t(message.size()));
    payload += message;
    putU64(payload, session);
    // A rank that reached rank 0 over loopback shares its host: another
    // host reaches it at the address it reached rank 0 at.
    uint32_t here = endpointOf(fd).sin_addr.s_addr;
    for (int64_t r = 0; status.ok() && r < worldSize; ++r) {
      putU32(payload, isLoopback(ips[r]) ? here : ips[r]);
      putU32(payload, ports[r]);
    }
    return tcp::encodeFrame(tcp::kTable << 8, payload);
  };
  for (int64_t r = 1; r < worldSize; ++r)
    if (sockets[r] >= 0 && status.ok()) {
      Status sent = writeAll(sockets[r], tableFor(sockets[r]), deadline);
      if (!sent.ok())
        status = within(str("rendezvous at ", where, ": sending rank ", r,
                            " the table failed: "),
                        sent);
    } else if (sockets[r] >= 0) {
      (void)writeAll(sockets[r], tableFor(sockets[r]), deadlineAfter(1));
    }
  for (int &fd : offenders) {
    (void)writeAll(fd, tableFor(fd), deadlineAfter(1));
    closeSocket(fd);
  }
  return status;
}

Status TcpLauncher::rendezvousAsWorker(const std::string &address,
                                       uint16_t port, const std::string &where,
                                       Clock::time_point deadline) {
  uint32_t masterIp = 0;
  std::string problem = resolve(address, masterIp);
  if (!problem.empty())
    return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, problem);
  int listener = listenOn(0, problem);
  if (listener < 0)
    return communication("cannot listen for the other ranks: " + problem);
  struct Closer {
    int &fd;
    ~Closer() { closeSocket(fd); }
  } closeListener{listener};

  int master = connectTo(masterIp, port, deadline, problem);
  if (master < 0)
    return timedOut(str("could not reach rank 0 at ", where, " within ",
                        timeout, " s (", problem,
                        "; is rank 0 running, and MASTER_ADDR/MASTER_PORT "
                        "right?)"));
  sockets[0] = master;
  Status heard =
      writeAll(master,
               tcp::encodeHello(uint32_t(worldRank), uint32_t(worldSize),
                                portOf(listener)),
               deadline);
  std::string table;
  // Rank 0 answers at its own deadline at the latest, which may be a
  // little after this rank's: a second's grace to hear why.
  if (heard.ok())
    heard = readFrame(master, tcp::kTable << 8, tableBytes(worldSize), table,
                      deadline + std::chrono::seconds(1));
  if (!heard.ok())
    return within(str("rendezvous at ", where, ": no table from rank 0: "),
                  heard);
  // A failure carries no addresses, so that a rank whose WORLD_SIZE is
  // not rank 0's reads why.
  Reader reader(table);
  uint32_t code, length;
  uint64_t session;
  std::string message;
  std::vector<uint32_t> ips(worldSize), ports(worldSize);
  bool valid = reader.u32(code) && code <= TAMOE_RT_ERROR_INTERNAL &&
               reader.u32(length) && length <= tcp::kMaxMessageBytes &&
               reader.text(length, message) && reader.u64(session);
  for (int64_t r = 0; valid && code == TAMOE_RT_SUCCESS && r < worldSize; ++r)
    valid = reader.u32(ips[r]) && reader.u32(ports[r]) && ports[r] <= 65535;
  if (!valid || !reader.atEnd())
    return communication(str("rendezvous at ", where,
                             ": rank 0 sent a malformed table (", table.size(),
                             " bytes)"));
  if (code != TAMOE_RT_SUCCESS)
    return Status::error(tamoe_rt_status_t(code), printable(message));

  // The mesh: connect to every lower rank (rank 0's socket is the
  // rendezvous's), then accept every higher one. A phase of its own, with
  // the whole timeout: every rank got its table when the last one joined,
  // which may have been at the end of this rank's time.
  deadline = deadlineAfter(timeout);
  std::string join;
  putU32(join, uint32_t(worldRank));
  putU64(join, session);
  for (int64_t r = 1; r < worldRank; ++r) {
    int fd = connectTo(ips[r], uint16_t(ports[r]), deadline, problem);
    if (fd < 0 && Clock::now() >= deadline) // tried until the deadline
      return timedOut(str("could not connect to rank ", r, " at ",
                          ipText(ips[r]), ":", ports[r], " within ", timeout,
                          " s (", problem, ")"));
    if (fd < 0)
      return communication(str("could not connect to rank ", r, " at ",
                               ipText(ips[r]), ":", ports[r], ": ", problem));
    Status sent =
        writeAll(fd, tcp::encodeFrame(tcp::kJoin << 8, join), deadline);
    if (!sent.ok()) {
      closeSocket(fd);
      return within(str("could not send rank ", r, " at ", ipText(ips[r]), ":",
                        ports[r], " this rank's join: "),
                    sent);
    }
    sockets[r] = fd;
  }
  // Then every higher rank: a join frame (rank, session) each. Anything
  // else is dropped as the rendezvous drops it.
  int64_t expected = worldSize - 1 - worldRank;
  Greetings joins(listener, tcp::kHeaderBytes + 12, size_t(worldSize) + 64,
                  "join");
  while (expected > 0 && Clock::now() < deadline) {
    for (Greetings::Greeting &greeting : joins.next(deadline)) {
      Header header = decodeHeader(greeting.bytes);
      std::string body = greeting.bytes.substr(tcp::kHeaderBytes);
      Reader fields(body);
      uint32_t rank = 0;
      uint64_t theirs = 0;
      bool valid = header.magic == tcp::kMagic &&
                   header.op == tcp::kJoin << 8 && header.length == 12 &&
                   fields.u32(rank) && fields.u64(theirs) &&
                   theirs == session && int64_t(rank) > worldRank &&
                   int64_t(rank) < worldSize && sockets[rank] < 0;
      if (!valid || expected == 0) {
        joins.drop(greeting.fd, greeting.ip,
                   "not a join of a higher rank of this session");
        continue;
      }
      sockets[rank] = greeting.fd;
      --expected;
    }
  }
  if (expected > 0) {
    std::string missing = unconnected(sockets, worldRank + 1, worldSize);
    return timedOut(str("rank(s) ", missing, " did not connect to rank ",
                        worldRank, " within ", timeout, " s", joins.note()));
  }
  return Status::success();
}

Status TcpLauncher::rendezvous(const std::string &address, uint16_t port,
                               const std::string &portOrigin) {
  sockets.assign(worldSize, -1);
  if (worldSize == 1)
    return Status::success();
  Clock::time_point deadline = deadlineAfter(timeout);
  // Messages name the port's origin: it is not MASTER_PORT itself.
  std::string where = str(address, ":", port, " (", portOrigin, ")");
  if (worldRank > 0)
    return rendezvousAsWorker(address, port, where, deadline);
  std::string problem;
  int listener = listenOn(port, problem);
  if (listener < 0)
    return communication(str("rank 0 cannot listen on port ", port, " (",
                             portOrigin, "): ", problem));
  Status status = rendezvousAsRoot(listener, where, deadline);
  closeSocket(listener);
  return status;
}

Status TcpLauncher::create(Status local, int64_t ranksPerNode,
                           double timeoutSeconds, int64_t backendKind,
                           std::unique_ptr<TcpLauncher> &launcher) {
  std::unique_ptr<TcpLauncher> self(new TcpLauncher());
  std::string problem = resolveTimeout(timeoutSeconds, self->timeout);
  // The job's shape: without WORLD_SIZE, a world of one.
  std::string address, portOrigin;
  int64_t masterPort = 0, port = 0;
  std::string fatal;
  if (nonEmptyEnv("WORLD_SIZE"))
    fatal = readInteger("WORLD_SIZE", 1, 1 << 24, self->worldSize,
                        "a positive integer up to 16777216");
  if (fatal.empty() && self->worldSize > 1)
    fatal = readInteger(
        "RANK", 0, self->worldSize - 1, self->worldRank,
        str("a rank in [0, WORLD_SIZE=", self->worldSize, ")").c_str());
  if (fatal.empty() && self->worldSize > 1) {
    const char *master = nonEmptyEnv("MASTER_ADDR");
    address = master ? master : "";
    if (!master)
      fatal = "MASTER_ADDR is not set: the tcp launcher needs torchrun's "
              "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT";
    else
      fatal = readInteger("MASTER_PORT", 1, 65535, masterPort,
                          "a port in [1, 65535]");
    if (fatal.empty())
      fatal = rendezvousPort(masterPort, port, portOrigin);
  }
  if (!fatal.empty())
    return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, fatal);

  Status status = self->rendezvous(address, uint16_t(port), portOrigin);
  if (!status.ok())
    return status;

  int64_t perNode = self->worldSize;
  std::string nodeProblem =
      resolveRanksPerNode(ranksPerNode, self->worldSize, perNode);
  if (problem.empty())
    problem = nodeProblem;
  if (nodeProblem.empty())
    self->nodeSize = perNode;
  int64_t localRank = 0;
  if (problem.empty() && nonEmptyEnv("LOCAL_RANK")) {
    problem = readInteger("LOCAL_RANK", 0, INT32_MAX, localRank,
                          "a non-negative integer");
    if (problem.empty() && localRank != self->worldRank % perNode)
      problem =
          str("LOCAL_RANK=", localRank,
              " does not go with RANK=", self->worldRank, " and ", perNode,
              " ranks per node: tamoe numbers ranks node-major (RANK = "
              "node * ranks per node + LOCAL_RANK), as torchrun does");
  }
  if (local.ok() && !problem.empty())
    local = Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, problem);
  status = self->agreeOn(
      TAMOE_RT_GROUP_WORLD, local,
      {{"ranks_per_node", self->nodeSize}, {"backend", backendKind}});
  if (!status.ok())
    return status;
  launcher = std::move(self);
  return Status::success();
}

TcpLauncher::~TcpLauncher() {
  for (int &fd : sockets)
    closeSocket(fd);
}

Status TcpLauncher::fail(tamoe_rt_status_t code, std::string message) {
  brokenBy = Status::error(code, std::move(message));
  // A broken launcher sends nothing more, and its context is leaked rather
  // than destroyed: closing the sockets now lets every peer hear that this
  // rank failed at its next collective, instead of when its timeout ends.
  for (int &fd : sockets)
    closeSocket(fd);
  return brokenBy;
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

Status TcpLauncher::exchange(tamoe_rt_group_t group, uint32_t kind,
                             const std::vector<std::string> &out,
                             const std::vector<int> &sendTo,
                             std::vector<std::string> &in,
                             const std::vector<int> &receiveFrom,
                             size_t maxBytes, const std::string &what) {
  if (!brokenBy.ok())
    return brokenStatus();
  uint32_t op = kind << 8 | uint32_t(group);
  // Per member: the frame to send (from `sent` on), and the header and
  // body received so far (the body's length once the header is in).
  struct Peer {
    int member = 0, fd = -1;
    std::string frame;
    size_t sent = 0;
    bool receives = false;
    std::string header, body;
    size_t bodyBytes = SIZE_MAX;
    bool sending() const { return sent < frame.size(); }
    bool receiving() const {
      return receives &&
             (header.size() < tcp::kHeaderBytes || body.size() < bodyBytes);
    }
  };
  std::vector<Peer> peers(groupSize(group));
  for (int member = 0; member < groupSize(group); ++member) {
    peers[member].member = member;
    peers[member].fd = sockets[worldRankOf(group, member)];
  }
  for (int member : sendTo)
    peers[member].frame = tcp::encodeFrame(op, out[member]);
  for (int member : receiveFrom)
    peers[member].receives = true;
  auto name = [&](const Peer &peer) {
    return str("rank ", worldRankOf(group, peer.member));
  };
  Clock::time_point deadline = deadlineAfter(timeout);
  while (true) {
    std::vector<pollfd> fds;
    std::vector<Peer *> polled;
    for (Peer &peer : peers) {
      short events = short((peer.sending() ? POLLOUT : 0) |
                           (peer.receiving() ? POLLIN : 0));
      if (events) {
        fds.push_back({peer.fd, events, 0});
        polled.push_back(&peer);
      }
    }
    if (fds.empty())
      break;
    if (Clock::now() >= deadline) {
      const Peer &late = *polled.front();
      return fail(
          TAMOE_RT_ERROR_TIMEOUT,
          str(what, " did not complete within ", timeout, " s: ",
              late.sending() ? "could not send to " : "no message from ",
              name(late), " (a peer died or did not call it)"));
    }
    ::poll(fds.data(), fds.size(), millisecondsLeft(deadline));
    for (size_t i = 0; i < fds.size(); ++i) {
      Peer &peer = *polled[i];
      short ready = fds[i].revents;
      if (peer.sending() && (ready & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t n = ::send(peer.fd, peer.frame.data() + peer.sent,
                           peer.frame.size() - peer.sent, MSG_NOSIGNAL);
        if (n > 0)
          peer.sent += size_t(n);
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
          return fail(TAMOE_RT_ERROR_COMMUNICATION,
                      str(what, ": ", name(peer),
                          " closed its connection (it exited or failed)"));
      }
      if (!peer.receiving() || !(ready & (POLLIN | POLLERR | POLLHUP)))
        continue;
      bool inHeader = peer.header.size() < tcp::kHeaderBytes;
      std::string &target = inHeader ? peer.header : peer.body;
      size_t want = inHeader ? tcp::kHeaderBytes - peer.header.size()
                             : peer.bodyBytes - peer.body.size();
      char buffer[65536];
      ssize_t n = ::recv(peer.fd, buffer, std::min(want, sizeof buffer), 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        continue;
      if (n <= 0)
        return fail(
            TAMOE_RT_ERROR_COMMUNICATION,
            str(what, ": ", name(peer), " closed its connection",
                peer.header.empty() ? "" : " in the middle of a message",
                " (it exited or failed)"));
      target.append(buffer, size_t(n));
      if (!inHeader || peer.header.size() < tcp::kHeaderBytes)
        continue;
      Header got = decodeHeader(peer.header);
      if (got.magic != tcp::kMagic)
        return fail(TAMOE_RT_ERROR_COMMUNICATION,
                    str(what, ": ", name(peer),
                        " sent bytes that are not a tamoe message (magic 0x",
                        std::hex, got.magic, ")"));
      if (got.op != op)
        return fail(TAMOE_RT_ERROR_MISMATCH,
                    str(what, ": ", name(peer),
                        " is in another collective (op ", got.op,
                        ", this rank's ", op,
                        "): the ranks called different operations"));
      if (got.length > maxBytes)
        return fail(TAMOE_RT_ERROR_COMMUNICATION,
                    str(what, ": ", name(peer), " sent a message of ",
                        got.length, " bytes where at most ", maxBytes,
                        " were expected"));
      peer.bodyBytes = got.length;
    }
  }
  for (int member : receiveFrom)
    in[member] = std::move(peers[member].body);
  return Status::success();
}

namespace {
/// The members of a group other than `self`.
std::vector<int> othersThan(int self, int size) {
  std::vector<int> members;
  for (int member = 0; member < size; ++member)
    if (member != self)
      members.push_back(member);
  return members;
}
} // namespace

Status TcpLauncher::agreeOn(tamoe_rt_group_t group, Status local,
                            const std::vector<Value> &values) {
  if (!brokenBy.ok())
    return brokenStatus();
  int size = groupSize(group), self = groupRank(group);
  std::string what = str("the agreement on arguments and status over the ",
                         groupName(group), " group");
  // Every member's status and values, to every member.
  std::string mine;
  putU32(mine, uint32_t(local.code));
  putU32(mine, uint32_t(values.size()));
  for (const Value &value : values)
    putU64(mine, uint64_t(value.value));
  std::string message = local.message.substr(0, tcp::kMaxMessageBytes);
  putU32(mine, uint32_t(message.size()));
  mine += message;
  std::vector<std::string> out(size, mine), in(size);
  std::vector<int> others = othersThan(self, size);
  Status status =
      exchange(group, tcp::kAgree, out, others, in, others,
               12 + 8 * values.size() + tcp::kMaxMessageBytes, what);
  if (!status.ok())
    return status;
  in[self] = mine;
  std::vector<uint32_t> codes(size);
  std::vector<std::string> messages(size);
  std::vector<std::vector<int64_t>> gathered(size);
  for (int member = 0; member < size; ++member) {
    Reader reader(in[member]);
    uint32_t count = 0, length = 0;
    bool valid = reader.u32(codes[member]) && reader.u32(count) &&
                 count == values.size() &&
                 codes[member] <= TAMOE_RT_ERROR_INTERNAL;
    for (uint32_t i = 0; valid && i < count; ++i) {
      uint64_t value = 0;
      valid = reader.u64(value);
      gathered[member].push_back(int64_t(value));
    }
    valid = valid && reader.u32(length) &&
            reader.text(length, messages[member]) && reader.atEnd();
    if (!valid)
      return fail(TAMOE_RT_ERROR_MISMATCH,
                  str(what, ": rank ", worldRankOf(group, member),
                      " sent a malformed agreement (", in[member].size(),
                      " bytes, ", count, " values where ", values.size(),
                      " were expected)"));
  }
  for (int member = 0; member < size; ++member)
    if (codes[member] != TAMOE_RT_SUCCESS)
      return Status::error(tamoe_rt_status_t(codes[member]),
                           str("rank ", worldRankOf(group, member), ": ",
                               printable(messages[member])));
  for (size_t i = 0; i < values.size(); ++i)
    for (int member = 1; member < size; ++member)
      if (gathered[member][i] != gathered[0][i])
        return disagreement(values[i].name, worldRankOf(group, 0),
                            gathered[0][i], worldRankOf(group, member),
                            gathered[member][i]);
  return Status::success();
}

Status TcpLauncher::broadcast(tamoe_rt_group_t group, void *hostData,
                              size_t bytes) {
  if (!brokenBy.ok())
    return brokenStatus();
  if (bytes && !hostData)
    return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         "broadcast: hostData is null");
  int size = groupSize(group), self = groupRank(group);
  std::string what = str("a broadcast over the ", groupName(group), " group");
  // The first member sends to every other; each other receives from it.
  std::vector<std::string> out(size), in(size);
  Status status;
  if (self == 0) {
    out.assign(size, std::string(static_cast<char *>(hostData), bytes));
    status = exchange(group, tcp::kBroadcast, out, othersThan(0, size), in, {},
                      0, what);
  } else {
    status = exchange(group, tcp::kBroadcast, out, {}, in, {0}, bytes, what);
  }
  if (!status.ok() || self == 0)
    return status;
  if (in[0].size() != bytes)
    return fail(TAMOE_RT_ERROR_MISMATCH,
                str(what, ": rank ", worldRankOf(group, 0), " sent ",
                    in[0].size(), " bytes, this rank expected ", bytes));
  if (bytes)
    std::memcpy(hostData, in[0].data(), bytes);
  return Status::success();
}

Status TcpLauncher::allToAllInts(tamoe_rt_group_t group,
                                 const std::vector<int32_t> &send, int perPeer,
                                 std::vector<int32_t> &recv,
                                 const std::string &what) {
  if (!brokenBy.ok())
    return brokenStatus();
  int size = groupSize(group), self = groupRank(group);
  size_t bytes = size_t(perPeer) * sizeof(int32_t);
  std::vector<int32_t> padded(send);
  padded.resize(size_t(perPeer) * size, 0);
  std::vector<std::string> out(size), in(size);
  for (int member = 0; member < size; ++member)
    out[member].assign(
        reinterpret_cast<const char *>(padded.data() + member * perPeer),
        bytes);
  std::vector<int> others = othersThan(self, size);
  Status status =
      exchange(group, tcp::kAllToAll, out, others, in, others, bytes, what);
  if (!status.ok())
    return status;
  in[self] = out[self];
  recv.assign(size_t(perPeer) * size, 0);
  for (int member = 0; member < size; ++member) {
    if (in[member].size() != bytes)
      return fail(TAMOE_RT_ERROR_MISMATCH,
                  str(what, ": rank ", worldRankOf(group, member), " sent ",
                      in[member].size(), " bytes, this rank expected ", bytes));
    std::memcpy(recv.data() + member * perPeer, in[member].data(), bytes);
  }
  return Status::success();
}
