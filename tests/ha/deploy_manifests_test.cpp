// The Kubernetes manifests of deploy/k8s (docs/operators.md, "High availability at NERSC (Spin)"),
// checked against the configuration they carry: that configuration loads with the programs' own
// parser, and the images, ports, probes, Services, mounts and Secrets of the manifests agree with
// it and with the doc. Nothing is started and no cluster is needed. Label `ha`.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/curve.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;

const fs::path source_dir = DESCPROD_SOURCE_DIR;
const fs::path k8s_dir = source_dir / "deploy" / "k8s";
const fs::path config_file = k8s_dir / "config" / "descprod.yaml";
const fs::path apps_file = k8s_dir / "config" / "apps.yaml";

// The images the doc names: every DESCprod program from one image, Redis and its sentinels from
// the official (Debian) one.
constexpr const char* descprod_image = "registry.nersc.gov/desc/descprod";
constexpr const char* redis_image = "docker.io/library/redis";
// The ConfigMap kustomization.yaml generates from config/descprod.yaml and config/apps.yaml.
constexpr const char* config_map = "descprod-config";

std::string rel(const fs::path& p) { return fs::relative(p, source_dir).string(); }

// node[k1][k2]... by const lookups only: an undefined node when a step is missing. (yaml-cpp's own
// operator[] throws on a missing step's child, and its non-const form adds the keys it looks up.)
template <class... K>
YAML::Node at(const YAML::Node& node, const K&... keys) {
  YAML::Node cur(YAML::NodeType::Undefined);
  if (!node.IsDefined()) return cur;
  cur.reset(node);
  for (std::string key : {std::string(keys)...}) {
    if (!cur.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = cur;
    YAML::Node next = map[key];
    if (!next.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    cur.reset(next);
  }
  return cur;
}

// One document of a manifest file.
struct object {
  std::string file;  // relative to the source tree
  YAML::Node node;
  std::string kind() const { return at(node, "kind").as<std::string>(""); }
  std::string name() const { return at(node, "metadata", "name").as<std::string>(""); }
  std::string where() const { return file + ": " + kind() + " " + name(); }
};

// The manifests kustomization.yaml lists, every document of each, and the files it generates
// ConfigMaps from.
struct manifests {
  YAML::Node kustomization;
  std::vector<object> objects;
  std::map<std::string, std::vector<std::string>> generated;  // ConfigMap name → its files

  static const manifests& get() {
    static const manifests m = load();
    return m;
  }
  static manifests load() {
    manifests m;
    m.kustomization = YAML::LoadFile((k8s_dir / "kustomization.yaml").string());
    for (const auto& r : at(m.kustomization, "resources")) {
      fs::path p = k8s_dir / r.as<std::string>();
      for (const auto& doc : YAML::LoadAllFromFile(p.string()))
        if (doc && doc.IsMap()) m.objects.push_back({rel(p), doc});
    }
    for (const auto& g : at(m.kustomization, "configMapGenerator")) {
      auto& files = m.generated[at(g, "name").as<std::string>()];
      for (const auto& f : at(g, "files")) files.push_back(f.as<std::string>());
    }
    return m;
  }
  std::vector<object> of_kind(const std::string& kind) const {
    std::vector<object> out;
    for (const auto& o : objects)
      if (o.kind() == kind) out.push_back(o);
    return out;
  }
  std::optional<object> find(const std::string& kind, const std::string& name) const {
    for (const auto& o : objects)
      if (o.kind() == kind && o.name() == name) return o;
    return std::nullopt;
  }
  // The workloads (Deployments and StatefulSets): their pod templates.
  std::vector<object> workloads() const {
    auto out = of_kind("Deployment");
    auto sts = of_kind("StatefulSet");
    out.insert(out.end(), sts.begin(), sts.end());
    return out;
  }
};

// The configuration of the ConfigMap, loaded by parse_config. redis.password_file names the file
// the Secret descprod-redis becomes in the pods; here a temporary file stands in for it (the
// parser reads it), and nothing else of the text changes, so errors keep their line numbers.
struct loaded_config {
  std::string text;
  YAML::Node yaml;
  descprod_config config;
  std::string password_file;  // as the ConfigMap names it

  static const loaded_config& get() {
    static const loaded_config c = load();
    return c;
  }
  static loaded_config load() {
    loaded_config c;
    c.text = read_file(config_file.string());
    c.yaml = YAML::Load(c.text);
    c.password_file = at(c.yaml, "redis", "password_file").as<std::string>("");
    std::string text = c.text;
    static temp_dir dir{"descprod-manifests-"};
    write_file(dir.file("redis-password"), "not-a-secret\n");
    // Every key naming it (password_file, sentinel_password_file).
    if (!c.password_file.empty())
      for (auto pos = text.find("password_file: " + c.password_file); pos != std::string::npos;
           pos = text.find("password_file: " + c.password_file, pos + 1))
        text.replace(pos + 15, c.password_file.size(), dir.file("redis-password"));
    c.config = parse_config(text, config_file.string());
    return c;
  }
};

// tcp://host:port → {host, port}; port -1 when it is not one.
std::pair<std::string, int> tcp_endpoint(const std::string& ep) {
  static const std::regex re(R"(tcp://(.+):([0-9]+))");
  std::smatch m;
  if (!std::regex_match(ep, m, re)) return {"", -1};
  return {m[1], std::stoi(m[2])};
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

// An nginx size ("1m", "512k", "1048576") in bytes; -1 when it is not one.
long long nginx_size(const std::string& size) {
  std::smatch m;
  if (!std::regex_match(size, m, std::regex("([0-9]{1,12})([kKmMgG]?)"))) return -1;
  const std::string unit = m.str(2);
  long long scale = unit.empty()                   ? 1
                    : (unit == "k" || unit == "K") ? 1LL << 10
                    : (unit == "m" || unit == "M") ? 1LL << 20
                                                   : 1LL << 30;
  return std::stoll(m.str(1)) * scale;
}

// The host of an http(s) URL.
std::string url_host(const std::string& url) {
  auto rest = url.substr(url.find("://") + 3);
  rest = rest.substr(0, rest.find_first_of("/:"));
  return rest;
}

YAML::Node pod_spec(const object& workload) { return at(workload.node, "spec", "template", "spec"); }
YAML::Node pod_labels(const object& workload) {
  return at(workload.node, "spec", "template", "metadata", "labels");
}

std::vector<YAML::Node> containers(const object& workload) {
  std::vector<YAML::Node> out;
  for (const char* list : {"initContainers", "containers"})
    for (const auto& c : at(pod_spec(workload), list)) out.push_back(c);
  return out;
}

// The single container of a DESCprod workload.
YAML::Node only_container(const object& w) {
  auto list = at(pod_spec(w), "containers");
  EXPECT_EQ(list.size(), 1u) << w.where() << ": one container expected";
  if (!list.IsSequence() || list.size() == 0) return YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node& first = list;
  return first[0];
}

// A container port given by number or by name → its number (-1: no such port).
int container_port(const YAML::Node& container, const YAML::Node& port) {
  if (!port) return -1;
  int n = port.as<int>(-1);
  if (n >= 0) return n;
  for (const auto& p : at(container, "ports"))
    if (at(p, "name").as<std::string>("") == port.as<std::string>())
      return at(p, "containerPort").as<int>(-1);
  return -1;
}

// Whether a Service's selector picks the pods of a workload (statefulset.kubernetes.io/pod-name
// picks one pod of a StatefulSet by name).
bool selects(const object& service, const object& workload) {
  auto selector = at(service.node, "spec", "selector");
  if (!selector || selector.size() == 0) return false;
  auto labels = pod_labels(workload);
  for (const auto& kv : selector) {
    auto key = kv.first.as<std::string>(), value = kv.second.as<std::string>();
    if (key == "statefulset.kubernetes.io/pod-name" && workload.kind() == "StatefulSet") {
      static const std::regex ordinal(R"(-([0-9]+)$)");
      std::smatch m;
      if (value.rfind(workload.name() + "-", 0) != 0 || !std::regex_search(value, m, ordinal) ||
          value != workload.name() + m.str(0) ||
          std::stoi(m[1]) >= at(workload.node, "spec", "replicas").as<int>(1))
        return false;
      continue;
    }
    if (at(labels, key).as<std::string>("") != value) return false;
  }
  return true;
}

// The workload a Service selects (the first), if any.
std::optional<object> selected_by(const object& service) {
  for (const auto& w : manifests::get().workloads())
    if (selects(service, w)) return w;
  return std::nullopt;
}

// Where a file or directory of a container comes from: the volume mounted at it or above it.
struct source {
  std::string volume_kind;  // configMap, secret, emptyDir, persistentVolumeClaim, ... ("": none)
  std::string name;         // the ConfigMap's or Secret's name
  std::string key;          // the key that becomes the file ("" for a whole volume)
  std::string mount;        // the mountPath
  bool read_only = false;
};

std::optional<source> source_of(const object& workload, const YAML::Node& container,
                                const std::string& path) {
  std::optional<YAML::Node> mount;
  std::string mount_path;
  for (const auto& m : at(container, "volumeMounts")) {
    auto mp = at(m, "mountPath").as<std::string>();
    if ((path == mp || path.rfind(mp + "/", 0) == 0) && mp.size() > mount_path.size()) {
      mount.emplace(m);  // never `mount = m`: a YAML::Node's assignment writes into the node
      mount_path = mp;
    }
  }
  if (!mount) return std::nullopt;
  std::string inside = path == mount_path ? "" : path.substr(mount_path.size() + 1);
  source s;
  s.mount = mount_path;
  s.read_only = at(*mount, "readOnly").as<bool>(false);
  std::optional<YAML::Node> found_volume;
  for (const auto& v : at(pod_spec(workload), "volumes"))
    if (at(v, "name").as<std::string>() == at(*mount, "name").as<std::string>()) found_volume.emplace(v);
  for (const auto& claim : at(workload.node, "spec", "volumeClaimTemplates"))
    if (at(claim, "metadata", "name").as<std::string>() == at(*mount, "name").as<std::string>())
      return source{"persistentVolumeClaim", at(claim, "metadata", "name").as<std::string>(), inside,
                    mount_path};
  if (!found_volume) return source{"", "", inside, mount_path};
  const YAML::Node& volume = *found_volume;
  // Which key of a ConfigMap or Secret becomes `inside`: its items' paths, or every key by name.
  auto from_items = [&](const YAML::Node& src, const char* kind,
                        const char* name_key) -> std::optional<source> {
    source out = s;
    out.volume_kind = kind;
    out.name = at(src, name_key).as<std::string>();
    if (inside.empty()) return out;
    if (!at(src, "items")) {
      out.key = inside;  // every key of it, under its own name
      return out;
    }
    for (const auto& item : at(src, "items"))
      if (at(item, "path").as<std::string>() == inside) {
        out.key = at(item, "key").as<std::string>();
        return out;
      }
    return std::nullopt;
  };
  if (at(volume, "configMap")) return from_items(at(volume, "configMap"), "configMap", "name");
  if (at(volume, "secret")) return from_items(at(volume, "secret"), "secret", "secretName");
  if (at(volume, "projected")) {
    for (const auto& src : at(volume, "projected", "sources")) {
      std::optional<source> found;
      if (at(src, "configMap")) found = from_items(at(src, "configMap"), "configMap", "name");
      if (at(src, "secret")) found = from_items(at(src, "secret"), "secret", "name");
      if (found && (!found->key.empty() || inside.empty())) return found;
    }
    return std::nullopt;
  }
  for (const char* kind : {"emptyDir", "persistentVolumeClaim", "hostPath", "nfs"})
    if (at(volume, kind)) {
      s.volume_kind = kind;
      s.key = inside;
      return s;
    }
  return s;
}

std::string describe(const std::optional<source>& s) {
  if (!s) return "nothing mounted there";
  return s->volume_kind + " " + s->name + (s->key.empty() ? "" : " key " + s->key) + " at " + s->mount;
}

// The section of docs/operators.md on Spin.
std::string spin_doc() {
  std::string doc = read_file((source_dir / "docs" / "operators.md").string());
  auto begin = doc.find("\n## High availability at NERSC (Spin)\n");
  if (begin == std::string::npos) return "";
  auto end = doc.find("\n## ", begin + 1);
  return doc.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// The DESCprod workloads (their pods run the DESCprod image).
std::vector<object> descprod_workloads() {
  std::vector<object> out;
  for (const auto& w : manifests::get().workloads())
    for (const auto& c : containers(w))
      if (at(c, "image").as<std::string>("").rfind(std::string(descprod_image) + ":", 0) == 0) {
        out.push_back(w);
        break;
      }
  return out;
}

object workload(const std::string& kind, const std::string& name) {
  auto w = manifests::get().find(kind, name);
  if (!w) throw std::runtime_error("deploy/k8s holds no " + kind + " " + name);
  return *w;
}

TEST(DeployManifests, KustomizationListsEveryManifestAndGeneratesTheConfigMapFromTheCheckedConfiguration) {
  const auto& m = manifests::get();
  std::set<std::string> listed;
  for (const auto& r : at(m.kustomization, "resources")) {
    listed.insert(r.as<std::string>());
    EXPECT_TRUE(fs::exists(k8s_dir / r.as<std::string>())) << "kustomization.yaml lists a missing file " << r;
  }
  for (const auto& e : fs::directory_iterator(k8s_dir)) {
    auto name = e.path().filename().string();
    if (e.path().extension() == ".yaml" && name != "kustomization.yaml") {
      EXPECT_TRUE(listed.count(name)) << rel(e.path()) << " is not in kustomization.yaml's resources";
    }
  }
  EXPECT_FALSE(at(m.kustomization, "namespace"))
      << "the manifests name no namespace (the Spin project's is used)";
  for (const auto& o : m.objects)
    EXPECT_FALSE(at(o.node, "metadata", "namespace")) << o.where() << " names a namespace";
  for (const auto& [name, files] : m.generated)
    for (const auto& f : files)
      EXPECT_TRUE(fs::exists(k8s_dir / f)) << "ConfigMap " << name << ": missing " << f;
  ASSERT_TRUE(m.generated.count(config_map)) << "kustomization.yaml generates no ConfigMap " << config_map;
  const auto& files = m.generated.at(config_map);
  EXPECT_NE(std::find(files.begin(), files.end(), "config/descprod.yaml"), files.end());
  EXPECT_NE(std::find(files.begin(), files.end(), "config/apps.yaml"), files.end());
  EXPECT_GE(m.workloads().size(), 5u) << "daemon, gateway, notifier, Redis, sentinels";
}

TEST(DeployManifests, TheConfigMapsConfigurationAndApplicationsLoadWithTheProgramsOwnParser) {
  try {
    const auto& c = loaded_config::get();
    EXPECT_FALSE(at(c.yaml, "redis", "password"))
        << rel(config_file) << ": redis.password holds a secret: use password_file";
    EXPECT_FALSE(c.password_file.empty())
        << rel(config_file) << ": redis.password_file (the Secret's file) is not set";
    EXPECT_EQ(c.config.redis.endpoint.password, "not-a-secret")
        << "the password did not come from password_file";
    EXPECT_TRUE(c.config.redis.endpoint.unix_path.empty())
        << "the pods reach Redis over TCP, not a unix socket";
    EXPECT_FALSE(c.config.pilots.enabled)
        << "Spin cannot run sbatch: pilots are submitted from the login nodes";
    EXPECT_EQ(c.config.apps_file, apps_file.lexically_normal().string());
  } catch (const config_error& e) {
    FAIL() << "the programs refuse " << rel(config_file) << ": " << e.what();
  }
  try {
    auto apps = load_apps(apps_file.string());
    EXPECT_FALSE(apps.apps.empty()) << rel(apps_file) << " declares no application";
  } catch (const config_error& e) {
    FAIL() << "the programs refuse " << rel(apps_file) << ": " << e.what();
  }
}

TEST(DeployManifests, EveryContainerRunsADocumentedImageWithAPinnedTag) {
  const std::string doc = spin_doc();
  ASSERT_FALSE(doc.empty()) << "docs/operators.md has no section '## High availability at NERSC (Spin)'";
  std::map<std::string, std::set<std::string>> tags;  // image → tags used
  for (const auto& w : manifests::get().workloads())
    for (const auto& c : containers(w)) {
      auto image = at(c, "image").as<std::string>("");
      auto colon = image.rfind(':');
      std::string repo = image.substr(0, colon),
                  tag = colon == std::string::npos ? "" : image.substr(colon + 1);
      const std::string where = w.where() + ": container " + at(c, "name").as<std::string>("");
      EXPECT_TRUE(colon != std::string::npos && repo.find('/') != std::string::npos &&
                  tag.find('/') == std::string::npos && (repo == descprod_image || repo == redis_image))
          << where << ": image " << image << " is neither " << descprod_image << " nor " << redis_image;
      EXPECT_TRUE(!tag.empty() && tag != "latest" &&
                  std::regex_match(tag, std::regex("[A-Za-z0-9_.-]*[0-9][A-Za-z0-9_.-]*")))
          << where << ": image " << image << " has no pinned tag (a version, never latest)";
      EXPECT_NE(at(c, "imagePullPolicy").as<std::string>(""), "Always") << where;
      tags[repo].insert(tag);
      if (repo == descprod_image) {
        auto cmd = at(c, "command");
        EXPECT_TRUE(cmd && cmd.size() >= 3 &&
                    cmd[0].as<std::string>().rfind("/opt/descprod/bin/descprod-", 0) == 0 &&
                    cmd[1].as<std::string>() == "--config" &&
                    cmd[2].as<std::string>() == "/etc/descprod/descprod.yaml")
            << where
            << ": command must be /opt/descprod/bin/descprod-<program> --config /etc/descprod/descprod.yaml";
      }
    }
  EXPECT_TRUE(tags.count(descprod_image)) << "no container runs " << descprod_image;
  for (const auto& [repo, used] : tags) {
    EXPECT_EQ(used.size(), 1u) << repo << " is used with several tags: every pod must run the same build";
    EXPECT_NE(doc.find(repo), std::string::npos) << "the doc's Spin section does not name the image " << repo;
  }
}

TEST(DeployManifests, TheGatewayListensOnTheConfiguredPortBehindTheServiceAndIngressWithItsProbes) {
  const auto& cfg = loaded_config::get().config.gateway;
  auto gw = workload("Deployment", "descprod-gateway");
  EXPECT_GE(at(gw.node, "spec", "replicas").as<int>(1), 2) << gw.where() << ": at least two gateways";
  EXPECT_TRUE(cfg.address == "0.0.0.0" || cfg.address == "::")
      << "gateway.address " << cfg.address
      << ": the Service and the kubelet reach the pod on its own address";
  auto c = only_container(gw);
  ASSERT_EQ(at(c, "ports").size(), 1u) << gw.where();
  EXPECT_EQ(at(static_cast<const YAML::Node&>(at(c, "ports"))[0], "containerPort").as<int>(-1), cfg.port)
      << gw.where() << ": the container port is not gateway.port of " << rel(config_file);

  // The probes: /healthz keeps it alive, /readyz puts it in the Service, both on its port.
  for (auto [probe, path] :
       {std::pair{"livenessProbe", "/healthz"}, std::pair{"readinessProbe", "/readyz"}}) {
    auto get = at(c, probe, "httpGet");
    ASSERT_TRUE(get) << gw.where() << ": no " << probe << " with httpGet";
    EXPECT_EQ(at(get, "path").as<std::string>(""), path) << gw.where() << ": " << probe;
    EXPECT_EQ(container_port(c, at(get, "port")), cfg.port)
        << gw.where() << ": " << probe << " is not on gateway.port";
    EXPECT_EQ(at(get, "scheme").as<std::string>("HTTP"), cfg.tls_cert.empty() ? "HTTP" : "HTTPS")
        << gw.where();
  }

  // The Service forwards to that port.
  auto svc = manifests::get().find("Service", "descprod-gateway");
  ASSERT_TRUE(svc) << "no Service descprod-gateway";
  EXPECT_TRUE(selects(*svc, gw)) << svc->where() << " does not select the gateway pods";
  std::map<std::string, int> service_ports;  // name and number → number
  for (const auto& p : at(svc->node, "spec", "ports")) {
    EXPECT_EQ(container_port(c, at(p, "targetPort") ? at(p, "targetPort") : at(p, "port")), cfg.port)
        << svc->where() << ": port " << at(p, "port") << " does not reach gateway.port";
    service_ports[at(p, "name").as<std::string>("")] = at(p, "port").as<int>();
    service_ports[at(p, "port").as<std::string>()] = at(p, "port").as<int>();
  }

  // Every Ingress rule goes to that Service, on public_url's host, with TLS for it.
  auto ingresses = manifests::get().of_kind("Ingress");
  ASSERT_FALSE(ingresses.empty()) << "no Ingress";
  ASSERT_EQ(cfg.public_url.rfind("https://", 0), 0u)
      << "gateway.public_url must be the ingress's https:// URL";
  const std::string host = url_host(cfg.public_url);
  for (const auto& ing : ingresses) {
    std::set<std::string> tls_hosts;
    for (const auto& t : at(ing.node, "spec", "tls"))
      for (const auto& h : at(t, "hosts")) tls_hosts.insert(h.as<std::string>());
    for (const auto& rule : at(ing.node, "spec", "rules")) {
      EXPECT_EQ(at(rule, "host").as<std::string>(""), host)
          << ing.where() << ": the host is not gateway.public_url's";
      EXPECT_TRUE(tls_hosts.count(at(rule, "host").as<std::string>("")))
          << ing.where() << ": no TLS for its host";
      for (const auto& path : at(rule, "http", "paths")) {
        auto backend = at(path, "backend", "service");
        EXPECT_EQ(at(backend, "name").as<std::string>(""), "descprod-gateway") << ing.where();
        auto port = at(backend, "port", "name") ? at(backend, "port", "name") : at(backend, "port", "number");
        EXPECT_TRUE(port && service_ports.count(port.as<std::string>()))
            << ing.where() << ": backend port " << port << " is not a port of Service descprod-gateway";
      }
    }
    // A body the gateway accepts must pass the ingress (nginx's default is 1m).
    auto size = at(ing.node, "metadata", "annotations", "nginx.ingress.kubernetes.io/proxy-body-size")
                    .as<std::string>("1m");
    long long bytes = nginx_size(size);
    ASSERT_GE(bytes, 0) << ing.where() << ": proxy-body-size " << size << " is not an nginx size";
    EXPECT_GE(bytes, static_cast<long long>(cfg.max_body_bytes))
        << ing.where() << ": proxy-body-size " << size << " is below gateway.max_body_bytes";
  }
  EXPECT_EQ(loaded_config::get().config.notify.base_url, cfg.public_url)
      << "notify.base_url: the mails' links";
}

TEST(DeployManifests, TheDaemonsAreTwoReplicasOnlyTheLeaderIsReadyAndRolloutsCanFinish) {
  const auto& yaml = loaded_config::get().yaml;
  auto d = workload("Deployment", "descprod-daemon");
  const int replicas = at(d.node, "spec", "replicas").as<int>(1);
  EXPECT_EQ(replicas, 2) << d.where() << ": a leader and a standby";
  // Only the leader is ever Ready, so a rolling update that waits for new pods to become
  // available never ends: replace them all at once.
  auto strategy = at(d.node, "spec", "strategy");
  auto unavailable = at(strategy, "rollingUpdate", "maxUnavailable").as<std::string>("25%");
  EXPECT_TRUE(
      at(strategy, "type").as<std::string>("RollingUpdate") == "Recreate" || unavailable == "100%" ||
      (std::all_of(unavailable.begin(), unavailable.end(), ::isdigit) && std::stoi(unavailable) >= replicas))
      << d.where() << ": with maxUnavailable " << unavailable
      << " a rollout waits forever for a second Ready daemon";

  // Ready = leading: the probe tests the leader file.
  ASSERT_TRUE(at(yaml, "daemon", "leader_file")) << rel(config_file) << ": no daemon.leader_file";
  const std::string leader_file = at(yaml, "daemon", "leader_file").as<std::string>();
  auto c = only_container(d);
  auto probe = at(c, "readinessProbe", "exec", "command");
  ASSERT_TRUE(probe) << d.where() << ": no exec readinessProbe";
  EXPECT_EQ(probe.as<std::vector<std::string>>(), (std::vector<std::string>{"test", "-f", leader_file}))
      << d.where() << ": the readiness probe must be test -f <daemon.leader_file>";
  EXPECT_LE(at(c, "readinessProbe", "periodSeconds").as<int>(10), 2)
      << d.where() << ": the Services must follow the lease";
  EXPECT_EQ(at(c, "readinessProbe", "failureThreshold").as<int>(3), 1) << d.where();
  auto dir = source_of(d, c, fs::path(leader_file).parent_path().string());
  EXPECT_TRUE(dir && dir->volume_kind == "emptyDir" && !dir->read_only)
      << d.where()
      << ": the leader file's folder must be a writable emptyDir (the root file system is read-only): "
      << describe(dir);
  EXPECT_FALSE(at(c, "livenessProbe") && at(c, "livenessProbe", "exec") &&
               at(c, "livenessProbe", "exec", "command").as<std::vector<std::string>>() ==
                   probe.as<std::vector<std::string>>())
      << d.where() << ": a liveness probe on the leader file would kill the standby";
}

TEST(DeployManifests, TheDaemonServicesExposeTheConfiguredEndpointsToTheLeader) {
  const auto& cfg = loaded_config::get().config;
  auto d = workload("Deployment", "descprod-daemon");
  auto c = only_container(d);
  // Which Service selecting the daemons carries a port to the given container port.
  auto service_for = [&](int port) -> std::optional<std::pair<object, YAML::Node>> {
    for (const auto& s : manifests::get().of_kind("Service"))
      if (selects(s, d))
        for (const auto& p : at(s.node, "spec", "ports"))
          if (container_port(c, at(p, "targetPort") ? at(p, "targetPort") : at(p, "port")) == port)
            return std::pair{s, p};
    return std::nullopt;
  };
  for (auto [key, endpoint] : {std::pair{"daemon.worker_endpoint", cfg.daemon.worker_endpoint},
                               std::pair{"daemon.gateway_endpoint", cfg.daemon.gateway_endpoint}}) {
    auto [host, port] = tcp_endpoint(endpoint);
    ASSERT_GT(port, 0) << key << " " << endpoint << ": pods need tcp://";
    EXPECT_TRUE(host == "0.0.0.0" || host == "*")
        << key << " " << endpoint << ": bind every address of the pod";
    bool declared = false;
    for (const auto& p : at(c, "ports")) declared |= at(p, "containerPort").as<int>(-1) == port;
    EXPECT_TRUE(declared) << d.where() << ": no container port " << port << " (" << key << ")";
    auto svc = service_for(port);
    ASSERT_TRUE(svc) << "no Service sends port " << port << " (" << key << ") to the daemons";
    EXPECT_EQ(at(svc->second, "port").as<int>(), port)
        << svc->first.where() << ": the Service's port is not the port of " << key << " " << endpoint;
    EXPECT_FALSE(at(svc->first.node, "spec", "publishNotReadyAddresses").as<bool>(false))
        << svc->first.where() << ": the standby must not receive connections";
    if (std::string(key) == "daemon.worker_endpoint") {
      // The workers are on the compute nodes, outside the cluster, and CURVE guards the socket.
      auto type = at(svc->first.node, "spec", "type").as<std::string>("ClusterIP");
      EXPECT_TRUE(type == "LoadBalancer" || type == "NodePort") << svc->first.where() << ": " << type;
      EXPECT_FALSE(cfg.daemon.curve_secret_key_file.empty())
          << key << " is reached from outside: CURVE is required";
      EXPECT_EQ(cfg.daemon.worker_auth, "token");
    } else {
      // The gateways name that Service (daemon_endpoint may list several, comma-separated).
      EXPECT_EQ(at(svc->first.node, "spec", "type").as<std::string>("ClusterIP"), "ClusterIP")
          << svc->first.where() << ": the gateway socket has no CURVE: keep it inside the cluster";
      for (const auto& ep : split_commas(cfg.gateway.daemon_endpoint)) {
        auto [gw_host, gw_port] = tcp_endpoint(ep);
        EXPECT_EQ(gw_host, svc->first.name())
            << "gateway.daemon_endpoint " << ep << " does not name the Service";
        EXPECT_EQ(gw_port, at(svc->second, "port").as<int>()) << "gateway.daemon_endpoint " << ep;
      }
    }
  }
}

TEST(DeployManifests, TheComponentsFindTheMasterThroughTheSentinelsWhichWatchTheMasterAndReplica) {
  const auto& cfg = loaded_config::get().config;
  auto redis = workload("StatefulSet", "descprod-redis");
  auto sentinels = workload("StatefulSet", "descprod-redis-sentinel");
  EXPECT_EQ(at(redis.node, "spec", "replicas").as<int>(0), 2) << redis.where() << ": a master and a replica";
  const int n = at(sentinels.node, "spec", "replicas").as<int>(0);
  EXPECT_EQ(n, 3) << sentinels.where() << ": three sentinels";

  // redis.sentinels names every sentinel pod by its stable name under the StatefulSet's headless
  // Service, on the port that Service and the container have.
  const auto& ep = cfg.redis.endpoint;
  ASSERT_EQ(static_cast<int>(ep.sentinels.size()), n) << "redis.sentinels must list every sentinel pod";
  const auto service_name = at(sentinels.node, "spec", "serviceName").as<std::string>("");
  auto svc = manifests::get().find("Service", service_name);
  ASSERT_TRUE(svc) << sentinels.where() << ": serviceName " << service_name << " is no Service";
  EXPECT_EQ(at(svc->node, "spec", "clusterIP").as<std::string>(""), "None") << svc->where() << ": headless";
  EXPECT_TRUE(selects(*svc, sentinels)) << svc->where() << " does not select the sentinel pods";
  auto selected = selected_by(*svc);
  EXPECT_TRUE(selected && selected->name() == sentinels.name())
      << svc->where() << " selects another workload";
  auto sc = only_container(sentinels);
  for (int i = 0; i < n; ++i) {
    const auto& s = ep.sentinels[static_cast<std::size_t>(i)];
    EXPECT_EQ(s.host, sentinels.name() + "-" + std::to_string(i) + "." + service_name)
        << "redis.sentinels[" << i << "]";
    bool port_ok = false;
    for (const auto& p : at(svc->node, "spec", "ports"))
      port_ok |= at(p, "port").as<int>() == s.port &&
                 container_port(sc, at(p, "targetPort") ? at(p, "targetPort") : at(p, "port")) == s.port;
    EXPECT_TRUE(port_ok) << svc->where() << ": no port " << s.port << " to the sentinels";
  }

  // The name they monitor, and the users: descprod on Redis (start-redis.sh) and on the sentinels
  // (start-sentinel.sh, allowed only to ask for the master and to hear of a switch).
  const std::string sentinel_script = read_file((k8s_dir / "redis" / "start-sentinel.sh").string());
  EXPECT_NE(sentinel_script.find("sentinel monitor " + ep.master_name + " "), std::string::npos)
      << "start-sentinel.sh must monitor redis.master_name (" << ep.master_name << ")";
  EXPECT_EQ(ep.username, "descprod") << "the services' ACL user (redis/start-redis.sh)";
  EXPECT_EQ(ep.sentinel_username, "descprod") << "the sentinels' user for the components (start-sentinel.sh)";
  EXPECT_NE(sentinel_script.find("user descprod on #$(sha256 \"$descprod\")"), std::string::npos)
      << "start-sentinel.sh: the user descprod with the services' password";
  for (const char* needed : {"&+switch-master", "+subscribe", "+sentinel|get-master-addr-by-name"})
    EXPECT_NE(sentinel_script.find(needed), std::string::npos)
        << "start-sentinel.sh: user descprod needs " << needed;
  EXPECT_GE(cfg.redis.wait_replicas, 1) << "a submit answered 201 must be on the replica (WAIT)";

  // The components follow a failover, so the sentinels may promote the replica.
  auto rc = only_container(redis);
  std::string promote;
  for (const auto& e : at(rc, "env"))
    if (at(e, "name").as<std::string>("") == "DESCPROD_REDIS_PROMOTE_REPLICAS")
      promote = at(e, "value").as<std::string>("");
  EXPECT_EQ(promote, "yes") << redis.where() << ": DESCPROD_REDIS_PROMOTE_REPLICAS";
  const std::string script = read_file((k8s_dir / "redis" / "start-redis.sh").string());
  EXPECT_NE(script.find("user descprod on #"), std::string::npos) << "start-redis.sh: the ACL user descprod";
  EXPECT_NE(script.find("+role"), std::string::npos) << "start-redis.sh: the user descprod may ask ROLE";
  EXPECT_NE(script.find("~" + cfg.redis.prefix + "*"), std::string::npos)
      << "start-redis.sh: the descprod user's keys must be redis.prefix's (" << cfg.redis.prefix << "*)";
}

TEST(DeployManifests, EveryFileTheConfigurationNamesIsMountedFromItsConfigMapOrSecret) {
  const auto& c = loaded_config::get();
  const auto& cfg = c.config;
  const auto dir = std::string("/etc/descprod");
  auto workloads = descprod_workloads();
  ASSERT_EQ(workloads.size(), 3u) << "the daemon, the gateway and the notifier";
  for (const auto& w : workloads) {
    auto container = only_container(w);
    auto expect_from = [&](const std::string& what, const std::string& path, const std::string& kind,
                           const std::string& name, const std::string& key) {
      auto s = source_of(w, container, path);
      EXPECT_TRUE(s && s->volume_kind == kind && (name.empty() || s->name == name) &&
                  (key.empty() || s->key == key))
          << w.where() << ": " << what << " " << path << " must come from " << kind << " " << name
          << (key.empty() ? "" : " key " + key) << "; found " << describe(s);
      return s;
    };
    expect_from("the configuration", dir + "/descprod.yaml", "configMap", config_map, "descprod.yaml");
    expect_from("apps", dir + "/" + fs::path(cfg.apps_file).filename().string(), "configMap", config_map,
                "apps.yaml");
    // The services' password is the one start-redis.sh gives Redis's user descprod.
    expect_from("redis.password_file", c.password_file, "secret", "descprod-redis", "descprod-password");
    // The sentinels' user descprod has the same password (start-sentinel.sh).
    const auto sentinel_file = at(c.yaml, "redis", "sentinel_password_file").as<std::string>("");
    EXPECT_EQ(sentinel_file, c.password_file) << "redis.sentinel_password_file";
    if (w.name() == "descprod-daemon") {
      expect_from("daemon.curve_secret_key_file", cfg.daemon.curve_secret_key_file, "secret", "", "");
      auto keys = source_of(w, container, cfg.daemon.curve_authorized_keys_dir);
      EXPECT_TRUE(keys && keys->mount == cfg.daemon.curve_authorized_keys_dir && keys->key.empty() &&
                  (keys->volume_kind == "configMap" || keys->volume_kind == "secret"))
          << w.where() << ": daemon.curve_authorized_keys_dir must be a whole ConfigMap's folder; found "
          << describe(keys);
    }
  }
}

TEST(DeployManifests, EverySecretAndHandMadeConfigMapIsOneTheDocSaysHowToCreate) {
  const std::string doc = spin_doc();
  ASSERT_FALSE(doc.empty()) << "docs/operators.md has no section '## High availability at NERSC (Spin)'";
  const auto& m = manifests::get();
  std::map<std::string, std::set<std::string>> secrets;  // name → keys used
  std::set<std::string> config_maps;
  for (const auto& w : m.workloads()) {
    for (const auto& v : at(pod_spec(w), "volumes")) {
      if (at(v, "secret")) {
        auto& keys = secrets[at(v, "secret", "secretName").as<std::string>()];
        for (const auto& i : at(v, "secret", "items")) keys.insert(at(i, "key").as<std::string>());
      }
      if (at(v, "configMap")) config_maps.insert(at(v, "configMap", "name").as<std::string>());
      for (const auto& s : at(v, "projected", "sources")) {
        if (at(s, "secret")) {
          auto& keys = secrets[at(s, "secret", "name").as<std::string>()];
          for (const auto& i : at(s, "secret", "items")) keys.insert(at(i, "key").as<std::string>());
        }
        if (at(s, "configMap")) config_maps.insert(at(s, "configMap", "name").as<std::string>());
      }
    }
    for (const auto& s : at(pod_spec(w), "imagePullSecrets")) secrets[at(s, "name").as<std::string>()];
    for (const auto& c : containers(w)) {
      for (const auto& e : at(c, "env"))
        if (at(e, "valueFrom", "secretKeyRef"))
          secrets[at(e, "valueFrom", "secretKeyRef", "name").as<std::string>()].insert(
              at(e, "valueFrom", "secretKeyRef", "key").as<std::string>());
      for (const auto& e : at(c, "envFrom"))
        if (at(e, "secretRef")) secrets[at(e, "secretRef", "name").as<std::string>()];
    }
  }
  for (const auto& ing : m.of_kind("Ingress"))
    for (const auto& t : at(ing.node, "spec", "tls")) secrets[at(t, "secretName").as<std::string>()];
  // The Secrets of redis/start-redis.sh (mounted whole at /etc/redis-secrets).
  for (const auto& f : {"start-redis.sh", "start-sentinel.sh"}) {
    std::string script = read_file((k8s_dir / "redis" / f).string());
    static const std::regex used(R"(\$secrets/([a-z-]+)|secret ([a-z-]+-password))");
    for (std::sregex_iterator it(script.begin(), script.end(), used), end; it != end; ++it)
      secrets["descprod-redis"].insert((*it)[1].matched ? (*it)[1].str() : (*it)[2].str());
  }
  EXPECT_TRUE(secrets.count("descprod-redis") && secrets.count("descprod-curve") &&
              secrets.count("descprod-tls"))
      << "the Redis passwords, the daemon's CURVE key and the ingress's certificate";
  for (const auto& [name, keys] : secrets) {
    static const std::regex create(R"(kubectl create secret (generic|tls) ([a-z0-9-]+))");
    bool documented = false;
    for (std::sregex_iterator it(doc.begin(), doc.end(), create), end; it != end; ++it)
      documented |= (*it)[2] == name;
    EXPECT_TRUE(documented) << "Secret " << name
                            << " is used but the doc's Spin section has no `kubectl create secret "
                            << "... " << name << "`";
    for (const auto& key : keys)
      EXPECT_NE(doc.find(key + "="), std::string::npos)
          << "Secret " << name << ": the doc does not say how to fill its key " << key << " (" << key
          << "=...)";
  }
  for (const auto& name : config_maps) {
    if (m.generated.count(name)) continue;
    EXPECT_NE(doc.find("kubectl create configmap " + name), std::string::npos)
        << "ConfigMap " << name << " is neither generated by kustomization.yaml nor made as the doc says";
  }
}

// Whether a line holds something that looks like a secret value rather than a reference to one
// ("" when not; else what it looks like).
std::string secret_in(const std::string& line) {
  static const std::vector<std::pair<std::regex, std::string>> patterns = {
      {std::regex(R"(-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----)"), "a PEM key or certificate"},
      {std::regex(R"(dp_[0-9a-f]{16,})"), "a DESCprod token"},
      {std::regex(R"((^|[^0-9A-Fa-f])[0-9A-Fa-f]{32,}([^0-9A-Fa-f]|$))"),
       "a long hexadecimal string (a password or its hash)"},
      {std::regex(R"((requirepass|masterauth|sentinel-pass)\s+[^$\s])"), "a Redis password"},
      {std::regex(R"(auth-pass\s+\S+\s+[^$\s])"), "a Redis password"},
      {std::regex(R"(\buser\s+\S+\s+(on|off)\b.*\s>[^\s$"])"), "a Redis ACL password"},
      {std::regex(R"((^|\s)(password|secret|token|client_secret)\s*:\s*['"]?[^\s'"#])", std::regex::icase),
       "a password, secret or token value"},
  };
  for (const auto& [re, what] : patterns)
    if (std::regex_search(line, re)) return what;
  // A CURVE key: a word of 40 Z85 characters with upper and lower case letters and digits (which
  // the names in the manifests, all lower case, are not), as the word or inside quotes.
  std::istringstream words(line);
  const std::string quotes = "\"'`,";
  for (std::string word; words >> word;) {
    std::string bare = word;
    bare.erase(0, std::min(bare.find_first_not_of(quotes), bare.size()));
    while (!bare.empty() && quotes.find(bare.back()) != std::string::npos) bare.pop_back();
    for (const std::string& w : {word, bare}) {
      if (w.size() != 40 || !std::any_of(w.begin(), w.end(), ::isupper) ||
          !std::any_of(w.begin(), w.end(), ::islower) || !std::any_of(w.begin(), w.end(), ::isdigit))
        continue;
      try {
        curve_decode(w);
        return "a CURVE key";
      } catch (const std::exception&) {
      }
    }
  }
  return "";
}

TEST(DeployManifests, NoManifestHoldsASecretValue) {
  // The detector itself.
  for (const char* bad :
       {"requirepass hunter2", "  password: hunter2", "token: dp_0123456789abcdef0123",
        "user descprod on >hunter2 ~*", "-----BEGIN PRIVATE KEY-----",
        "user x on #9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "sentinel auth-pass descprod hunter2", "key: \"rPRF=m+<3NX59q.dQ2L&ClW?FHl8Ee/1E?z8%LC!\""})
    EXPECT_NE(secret_in(bad), "") << bad;
  for (const char* good :
       {"requirepass $admin", "  password_file: /etc/descprod/redis-password",
        "sentinel auth-pass descprod $admin", "worker_auth: token", "  self=\"$pod.descprod-redis-headless\"",
        "descprod-redis-0.descprod-redis-headless", "secretName: descprod-redis"})
    EXPECT_EQ(secret_in(good), "") << good;

  for (const auto& e : fs::recursive_directory_iterator(k8s_dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path());
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      auto what = secret_in(line);
      EXPECT_EQ(what, "") << rel(e.path()) << ":" << n << " looks like it holds " << what << ": " << line;
    }
  }
  for (const auto& o : manifests::get().objects) {
    EXPECT_NE(o.kind(), "Secret") << o.where() << ": Secrets are made by hand (the doc), never committed";
    if (o.kind() != "ConfigMap") continue;
    for (const auto& kv : at(o.node, "data")) {
      EXPECT_EQ(secret_in(kv.second.as<std::string>("")), "") << o.where();
    }
  }
  for (const auto& w : manifests::get().workloads())
    for (const auto& c : containers(w))
      for (const auto& env : at(c, "env")) {
        static const std::regex secretish("PASS|TOKEN|SECRET|KEY", std::regex::icase);
        if (std::regex_search(at(env, "name").as<std::string>(""), secretish)) {
          EXPECT_FALSE(at(env, "value"))
              << w.where() << ": env " << at(env, "name") << " must come from a Secret (valueFrom)";
        }
      }
}

TEST(DeployManifests, EveryPodRunsUnprivilegedWithItsResourcesBounded) {
  for (const auto& w : manifests::get().workloads()) {
    auto spec = pod_spec(w);
    EXPECT_FALSE(at(spec, "automountServiceAccountToken").as<bool>(true))
        << w.where() << ": no pod talks to the API";
    // The programs read DESCPROD_* variables, and the Services are named descprod-*.
    EXPECT_FALSE(at(spec, "enableServiceLinks").as<bool>(true)) << w.where() << ": enableServiceLinks: false";
    EXPECT_FALSE(at(spec, "hostNetwork").as<bool>(false)) << w.where();
    for (const auto& c : containers(w)) {
      const std::string where = w.where() + ": container " + at(c, "name").as<std::string>("");
      auto sc = at(c, "securityContext");
      EXPECT_TRUE(
          at(sc, "runAsNonRoot").as<bool>(at(spec, "securityContext", "runAsNonRoot").as<bool>(false)))
          << where << ": runAsNonRoot";
      EXPECT_GT(at(sc, "runAsUser").as<int>(at(spec, "securityContext", "runAsUser").as<int>(0)), 0)
          << where << ": a UID";
      EXPECT_TRUE(at(sc, "readOnlyRootFilesystem").as<bool>(false)) << where << ": readOnlyRootFilesystem";
      EXPECT_FALSE(at(sc, "allowPrivilegeEscalation").as<bool>(true))
          << where << ": allowPrivilegeEscalation: false";
      EXPECT_FALSE(at(sc, "privileged").as<bool>(false)) << where;
      auto drop = at(sc, "capabilities", "drop");
      EXPECT_TRUE(drop && drop.size() == 1 && drop[0].as<std::string>() == "ALL")
          << where << ": drop ALL capabilities";
      EXPECT_FALSE(at(sc, "capabilities", "add")) << where << ": no capability added";
      for (const char* bound : {"requests", "limits"})
        for (const char* r : {"cpu", "memory"})
          EXPECT_TRUE(at(c, "resources", bound, r)) << where << ": resources." << bound << "." << r;
    }
  }
}

}  // namespace
}  // namespace descprod::test
