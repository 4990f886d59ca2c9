// Starts `vmform lsp` for KDL files: everything the editor shows about vmform specs comes
// from the server (book/src/editor-support.md); this file only wires it to VS Code.

import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("vmform");
  const command = config.get<string>("path", "vmform");
  const policy = config.get<string | string[]>("policy", []);
  const serverOptions: ServerOptions = { command, args: ["lsp"] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "kdl" }],
    initializationOptions: { policy },
  };
  client = new LanguageClient("vmform", "vmform", serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("vmform") && client) {
        await client.stop();
        await activate(context);
      }
    }),
  );
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
