#include "rpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "rpc/channel.h"

namespace swarm::rpc {

absl::StatusOr<StartedServer> StartServer(const std::string& listen,
                                          const std::vector<grpc::Service*>& services,
                                          const std::vector<std::string>& health_names) {
  absl::StatusOr<HostPort> hp = ParseHostPort(listen, "--listen");
  if (!hp.ok()) return hp.status();
  // Both are process-wide switches read when a ServerBuilder is created; idempotent.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  int port = -1;
  builder.AddListeningPort(hp->ToString(), grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // gRPC sets SO_REUSEPORT on its listening sockets by default, which lets a second server bind a
  // port another process holds and silently take half its connections. Refuse that port instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", hp->ToString(),
                     ": address already in use by another process, or not a local address"));
  }
  SetServing(server.get(), health_names, false);
  HostPort bound = *hp;
  bound.port = port;
  return StartedServer{std::move(server), bound.ToString()};
}

void SetServing(grpc::Server* server, const std::vector<std::string>& health_names, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // The overall status ("").
  for (const std::string& name : health_names) health->SetServingStatus(name, serving);
}

}  // namespace swarm::rpc
